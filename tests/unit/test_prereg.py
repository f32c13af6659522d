"""Pre-registration (cvt_lab.report.prereg): the file's checks, the registered sweep's command line, and the
report's confirmatory / exploratory label on hand-made sweeps."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, UTC
from pathlib import Path

import pytest
from conftest import write_prereg

from cvt_lab.report import report
from cvt_lab.prereg import main
from cvt_lab.report.prereg import PreregError, load_prereg, sweep_overrides
from cvt_lab.results import file_sha256

PREREG = """\
table: table7
scale: cpu
experiment: ablation_kv_stride
metric: test/acc1
overrides: [data.split_seed=1]
rows: [stride1, stride2]
seeds: [100, 101]
alpha: 0.05
family: test_family
smallest_effect: 3.0
margins: {}
"""


def register(root: Path, text: str = PREREG, commit: bool = True) -> Path:
    return write_prereg(root, "table7", text, commit)


def write_job(sweep: Path, option: str, seed: int, acc: float, sha: str | None, started: datetime,
              identity: str | None = None) -> None:
    d = sweep / "model" / f"kv_stride={option},seed={seed}"
    d.mkdir(parents=True)
    r = {"status": "finished", "test/acc1": acc / 100, "seed": seed, "experiment": {"table": "table7", "row": option},
         "overrides": [f"model/kv_stride={option}", f"seed={seed}"], "started_at": started.isoformat(),
         "identity": identity or f"id-{option}-{seed}", "identity_config": {"data.split_seed": 1, "seed": seed},
         "prereg": None if sha is None else {"path": "experiments/prereg/table7.yaml", "sha256": sha}}
    (d / "results.json").write_text(json.dumps(r))


@pytest.fixture
def registered(monkeypatch):
    """The registered sweep's identities, without composing it: (row, seed) -> id-<row>-<seed>."""
    monkeypatch.setattr("cvt_lab.report.analysis.registered_identities",
                        lambda prereg, axis: {(o, s): f"id-{o}-{s}" for o in prereg.rows for s in prereg.seeds})
    monkeypatch.setattr("cvt_lab.report.rows.paper_config_size", lambda spec, row: (None, None))


def sweep_of(tmp_path: Path, sha: str | None, later: bool = True, skip: tuple = (), **changed) -> Path:
    sweep = tmp_path / "sweeps" / "table7_cpu"
    started = datetime.now(UTC) + timedelta(seconds=5 if later else -3600)
    accs = {"stride1": [70.0, 71.0], "stride2": [60.0, 61.5]}
    for option, values in accs.items():
        for seed, acc in zip((100, 101), values):
            if (option, seed) in skip:
                continue
            job_sha = changed.get("sha_of", {}).get((option, seed), sha)
            identity = changed.get("identity_of", {}).get((option, seed))
            write_job(sweep, option, seed, acc, job_sha, started, identity)
    return sweep


def label_of(md: str) -> str:
    return next(line for line in md.splitlines() if line.startswith("**Confirmatory") or
                line.startswith("**Exploratory"))


def test_a_registered_committed_sweep_is_confirmatory(tmp_path, registered):
    path = register(tmp_path / "prereg")
    sweep = sweep_of(tmp_path, file_sha256(path))
    md = report(sweep, tmp_path / "out", prereg_root=path.parent)["md"].read_text()
    assert label_of(md).startswith("**Confirmatory: claim")
    assert f"sha256 `{file_sha256(path)}`" in md and "added in commit `" in md
    assert "Holm across the family `test_family`: 1 tests" in md


def test_a_job_without_the_hash_makes_the_table_exploratory(tmp_path, registered):
    path = register(tmp_path / "prereg")
    sweep = sweep_of(tmp_path, file_sha256(path), sha_of={("stride2", 101): None})
    md = report(sweep, tmp_path / "out", prereg_root=path.parent)["md"].read_text()
    assert label_of(md).startswith("**Exploratory")
    assert "1 of 4 jobs do not carry the registration's sha256" in md


def test_a_job_with_a_changed_identity_makes_the_table_exploratory(tmp_path, registered):
    path = register(tmp_path / "prereg")
    sweep = sweep_of(tmp_path, file_sha256(path), identity_of={("stride1", 100): "another"})
    md = report(sweep, tmp_path / "out", prereg_root=path.parent)["md"].read_text()
    assert label_of(md).startswith("**Exploratory")
    assert "1 of 4 jobs do not match the registered run identity" in md


def test_an_uncommitted_or_later_registration_is_not_a_preregistration(tmp_path, registered):
    path = register(tmp_path / "prereg", commit=False)
    md = report(sweep_of(tmp_path, file_sha256(path)), tmp_path / "out", prereg_root=path.parent)["md"].read_text()
    assert label_of(md).startswith("**Exploratory") and "is not committed as it is now" in md

    path = register(tmp_path / "prereg2")
    md = report(sweep_of(tmp_path / "b", file_sha256(path), later=False), tmp_path / "out",
                prereg_root=path.parent)["md"].read_text()
    assert label_of(md).startswith("**Exploratory") and "before the registration's commit" in md


def test_fewer_seeds_than_registered_is_incomplete_never_reproduced(tmp_path, registered):
    path = register(tmp_path / "prereg")
    sweep = sweep_of(tmp_path, file_sha256(path), skip=(("stride1", 101),))
    paths = report(sweep, tmp_path / "out", prereg_root=path.parent)
    md = paths["md"].read_text()
    assert label_of(md).startswith("**Confirmatory: claim incomplete")
    assert "row a (stride1): seeds [101] not finished" in md
    assert {r["verdict"] for r in csv.DictReader(paths["csv"].open()) if r["option"] == "stride1"} == {"not judged"}


def test_the_registration_checks_its_settings(tmp_path):
    for bad, message in [(PREREG.replace("[100, 101]", "[0, 1]"), "pilot seeds"),
                         (PREREG.replace("family: test_family\n", ""), "missing family"),
                         (PREREG + "epochs: 3\n", "unknown keys ['epochs']"),
                         (PREREG.replace("[100, 101]", "[100]"), "at least two")]:
        path = register(tmp_path / message.replace(" ", "_"), bad, commit=False)
        with pytest.raises(PreregError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_prereg(path)


def test_the_registered_sweeps_command_line(tmp_path, capsys):
    path = register(tmp_path / "prereg", commit=False)
    prereg = load_prereg(path)
    assert sweep_overrides(prereg, "model/kv_stride") == [
        "experiment=ablation_kv_stride", "scale=cpu", "data.split_seed=1", "model/kv_stride=stride1,stride2",
        "seed=100,101", f"prereg={path}"]
    assert main(["table7", "--root", str(path.parent)]) == 0
    assert capsys.readouterr().out.split() == sweep_overrides(prereg, "model/kv_stride")[2:]
    assert main(["table6", "--root", str(path.parent)]) == 0  # nothing registered: nothing printed
    assert capsys.readouterr().out == ""


def test_a_missing_row_is_incomplete(tmp_path, registered):
    path = register(tmp_path / "prereg")
    sweep = sweep_of(tmp_path, file_sha256(path), skip=(("stride1", 100), ("stride1", 101)))
    md = report(sweep, tmp_path / "out", prereg_root=path.parent)["md"].read_text()
    assert label_of(md).startswith("**Confirmatory: claim incomplete")
    assert "row a (stride1): seeds [100, 101] not finished" in md
