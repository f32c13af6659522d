"""The handwriting tables (htr_pos_embed, htr_conv_embed, htr_kv_stride) under the confirmation protocol of Tables
5-8, on test CER (lower is better): their specs, the per-line outcomes, the registrations and the report's verdicts
on hand-made sweeps. make's recipes and a tiny registered sweep end to end: tests/e2e/test_htr_sweep.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import write_prereg, rows_of
from omegaconf import OmegaConf

from cvt_lab.identity import file_sha256
from cvt_lab.report import load_paper_tables, report
from cvt_lab.report.claims import kind_of
from cvt_lab.report.prereg import PreregError, load_prereg, sweep_overrides
from cvt_lab.results import read_outcomes, write_outcomes

ROOT = Path(__file__).resolve().parents[2]
HTR_TABLES = {"htr_pos_embed": "model/pos_embed", "htr_conv_embed": "model/conv_embed",
              "htr_kv_stride": "model/kv_stride"}
LINES = 400


def write_line_job(sweep: Path, table: str, option: str, seed: int, edits: np.ndarray, chars: np.ndarray,
                   sha: str | None = None, identity: bool = False) -> None:
    """A finished line recognizer's job as the job writes it: results.json and outcomes.npz with per-line edits."""
    axis = HTR_TABLES[table]
    d = sweep / axis.split("/")[0] / f"{axis.split('/')[1]}={option},seed={seed}"
    d.mkdir(parents=True)
    cer = float(edits.sum() / chars.sum())
    r = {"status": "finished", "test/cer": cer, "test/wer": min(1.0, 2 * cer), "val/cer": cer, "seed": seed,
         "model": "htr_cvt", "params": 1_260_000, "experiment": {"table": table, "row": option},
         "overrides": [f"{axis}={option}", f"seed={seed}"],
         "started_at": (datetime.now(UTC) + timedelta(seconds=5)).isoformat()}
    if identity:  # a registered job: its identity, and the registration's hash
        r.update(identity=f"id-{option}-{seed}", identity_config={"data.split_seed": 1, "seed": seed},
                 prereg={"path": f"experiments/prereg/{table}.yaml", "sha256": sha})
    (d / "results.json").write_text(json.dumps(r))
    write_outcomes(d, {"test": edits == 0, "test_edits": edits, "test_chars": chars,
                       "val_edits": edits, "val_chars": chars})


def write_cer_rows(sweep: Path, table: str, rates: dict[str, float], seeds=(100, 101, 102), **job) -> None:
    """Rows of line jobs on the same LINES test lines, each line's edits binomial at the row's character error rate."""
    rng = np.random.default_rng(0)
    chars = rng.integers(9, 13, LINES)
    for option, rate in rates.items():
        for seed in seeds:
            write_line_job(sweep, table, option, seed, rng.binomial(chars, rate), chars, **job)


@pytest.fixture
def registered(monkeypatch):
    """The registered sweep's identities without composing it ((row, seed) -> id-<row>-<seed>), and no model counts."""
    monkeypatch.setattr("cvt_lab.report.analysis.registered_identities",
                        lambda prereg, axis: {(o, s): f"id-{o}-{s}" for o in prereg.rows for s in prereg.seeds})
    monkeypatch.setattr("cvt_lab.report.rows.paper_config_size", lambda spec, row: (None, None))


# ------------------------------------------------------------------------------------------------ the tables


@pytest.mark.parametrize("table", list(HTR_TABLES))
def test_each_handwriting_table_compares_test_cer_on_its_experiments_rows(table):
    """The sweeper's rows are the table's, in its order; no paper numbers; every expectation is a known test."""
    spec = load_paper_tables()[table]
    params = OmegaConf.load(ROOT / "conf" / "experiment" / f"{spec['experiment']}.yaml").hydra.sweeper.params
    assert spec["metric"] == "test/cer" and spec["paper"] is False and spec["axis"] == HTR_TABLES[table]
    assert str(params[spec["axis"]]).split(",") == [r["option"] for r in spec["rows"]]
    assert spec["reference"] in {r["option"] for r in spec["rows"]} and spec["claim"]
    assert not any(r.get("top1") or r.get("cer") for r in spec["rows"])
    kinds = {r["option"]: kind_of(r.get("expect")) for r in spec["rows"]}
    assert kinds == {"htr_pos_embed": {"none": None, "first": "noninferiority", "last": "noninferiority",
                                       "every": "noninferiority"},
                     "htr_conv_embed": {"patch_nopos": "signed", "patch_pos": "signed", "conv_pos": "equivalence",
                                        "conv_nopos": None},
                     "htr_kv_stride": {"stride1": "noninferiority", "stride2": None}}[table]


def test_docs_paper_leaves_out_the_tables_of_ours():
    from cvt_lab.report.paper import paper_tables_markdown

    assert "Handwriting" not in paper_tables_markdown()


def test_line_outcomes_keep_their_counts_and_older_files_read_as_before(tmp_path):
    edits, chars = np.array([0, 3, 1]), np.array([9, 10, 11])
    write_outcomes(tmp_path, {"test": edits == 0, "test_edits": edits, "test_chars": chars})
    read = read_outcomes(tmp_path)
    assert read["test"].dtype == bool and read["test_edits"].dtype == np.int64
    assert read["test_edits"].tolist() == [0, 3, 1] and read["test_chars"].tolist() == [9, 10, 11]
    old = tmp_path / "old"
    old.mkdir()
    np.savez_compressed(old / "outcomes.npz", test=np.array([1, 0, 1], dtype=np.uint8))  # an older file
    assert read_outcomes(old)["test"].tolist() == [True, False, True]


# ------------------------------------------------------------------------------------------------ the report

POS_EMBED_PREREG = """\
table: htr_pos_embed
scale: cpu
experiment: htr_ablation_pos_embed
metric: test/cer
overrides: [data.split_seed=1]
rows: [none, first, last, every]
seeds: [100, 101, 102]
alpha: 0.05
family: htr_test
smallest_effect: 2.0
margins: {first: 2.0, last: 2.0, every: 2.0}
"""


def test_a_registered_cer_table_judges_noninferiority_in_cer_points(tmp_path, registered):
    """none at 5% CER; first as good (non-inferior), every far worse (none is not worse: non-inferior), last far
    better (none is worse by more than the margin: inferior), so the claim does not reproduce."""
    path = write_prereg(tmp_path / "prereg", "htr_pos_embed", POS_EMBED_PREREG)
    sweep = tmp_path / "sweeps" / "htr_pos_embed_cpu"
    write_cer_rows(sweep, "htr_pos_embed", {"none": 0.05, "first": 0.05, "last": 0.01, "every": 0.15},
                   sha=file_sha256(path), identity=True)
    paths = report(sweep, tmp_path / "out", prereg_root=path.parent)
    md, rows = paths["md"].read_text(), rows_of(paths)
    assert paths["md"].name == "htr_pos_embed.md"
    assert "**Confirmatory: claim does not reproduce at this scale**" in md
    assert {o: rows[o]["verdict"] for o in ("first", "last", "every")} == {
        "first": "non-inferior", "last": "inferior", "every": "non-inferior"}
    assert rows["none"]["ours_cer_mean"] and float(rows["every"]["ours_diff"]) > 8  # CER points, every's higher
    assert "Holm across the family `htr_test`: 3 tests" in md
    assert "`none` not worse than `every`: **non-inferior**" in md and "one-sided p" in md
    assert "margins `first` 2 (non-inferiority)" in md and "floor (the best end) CER <= 1%" in md
    low, high = float(rows["first"]["ours_diff_ci_low"]), float(rows["first"]["ours_diff_ci_high"])
    assert -2.0 < low < 0 < high and rows["first"]["ci_level"] == "0.9" and rows["first"]["test_set_noise"] == "paired"
    assert "| — |" in md  # no paper numbers
    assert paths["png"].stat().st_size > 0


def test_holm_counts_the_other_handwriting_tables_of_the_family(tmp_path, registered):
    """htr_kv_stride registered in the same family but not run yet: its one test counts at p = 1."""
    root = tmp_path / "prereg"
    path = write_prereg(root, "htr_pos_embed", POS_EMBED_PREREG)
    write_prereg(root, "htr_kv_stride", POS_EMBED_PREREG.replace("htr_pos_embed", "htr_kv_stride").replace(
        "htr_ablation_pos_embed", "htr_ablation_kv_stride").replace("[none, first, last, every]", "[stride1, stride2]")
        .replace("{first: 2.0, last: 2.0, every: 2.0}", "{stride1: 2.0}"))
    sweep = tmp_path / "sweeps" / "htr_pos_embed_cpu"
    write_cer_rows(sweep, "htr_pos_embed", {"none": 0.05, "first": 0.05, "last": 0.05, "every": 0.05},
                   sha=file_sha256(path), identity=True)
    md = report(sweep, tmp_path / "out", prereg_root=root)["md"].read_text()
    assert ("Holm across the family `htr_test`: 4 tests, this table's 3 and htr_kv_stride's 1 (no confirmatory "
            "result yet: p = 1)") in md


def test_lower_cer_is_better_for_signed_rows(tmp_path, registered):
    """Table 6 transposed, exploratory: patch rows at a higher CER than conv_nopos agree with "-" (worse); the
    equivalence row has no margin without a registration."""
    sweep = tmp_path / "htr_conv_embed_cpu"
    write_cer_rows(sweep, "htr_conv_embed", {"patch_nopos": 0.12, "patch_pos": 0.11, "conv_pos": 0.05,
                                             "conv_nopos": 0.05})
    paths = report(sweep, tmp_path / "out", prereg_root=tmp_path / "no-prereg")
    rows, md = rows_of(paths), paths["md"].read_text()
    assert rows["patch_nopos"]["verdict"] == rows["patch_pos"]["verdict"] == "agrees"
    assert rows["conv_pos"]["not_judged_why"] == "no registered equivalence margin"
    assert "- (worse): **agrees**" in md and "**Exploratory" in md and "ours WER" in md


@pytest.mark.parametrize("rate, why", [
    (0.004, "row b at the floor (CER 0.40% <= 1%)"),
    (1.0, "row b at chance (CER 100.00% >= 95%: within 5 points of 100% or past it)"),
])
def test_cer_gates_work_in_the_metrics_direction(tmp_path, registered, rate, why):
    sweep = tmp_path / "htr_kv_stride_cpu"
    rng = np.random.default_rng(0)
    chars = np.full(LINES, 10)
    reference = (np.arange(LINES) < round(rate * chars.sum())).astype(int)  # one edit a line, the first lines
    for seed in (0, 1):
        write_line_job(sweep, "htr_kv_stride", "stride1", seed, rng.binomial(chars, 0.05), chars)
        write_line_job(sweep, "htr_kv_stride", "stride2", seed, chars if rate == 1.0 else reference, chars)
    rows = rows_of(report(sweep, tmp_path / "out", prereg_root=tmp_path / "no-prereg"))
    assert rows["stride1"]["not_judged_why"] == why


def test_a_cer_table_refuses_an_accuracy_metric_and_pilots_read_validation_cer(tmp_path, registered):
    sweep = tmp_path / "htr_kv_stride_cpu"
    write_cer_rows(sweep, "htr_kv_stride", {"stride1": 0.05, "stride2": 0.06}, seeds=(0, 1))
    with pytest.raises(ValueError, match="compares CER"):
        report(sweep, tmp_path / "out", metric="test/acc1", prereg_root=tmp_path / "no-prereg")
    md = report(sweep, tmp_path / "out", metric="val/cer", prereg_root=tmp_path / "no-prereg")["md"].read_text()
    assert "Ours: validation CER" in md and "| val/cer % |" in md


def test_a_cer_registration_defaults_its_best_end_to_the_floor(tmp_path, capsys):
    from cvt_lab.prereg import main

    path = write_prereg(tmp_path / "prereg", "htr_pos_embed", POS_EMBED_PREREG, commit=False)
    assert load_prereg(path).ceiling == 1.0
    bad = write_prereg(tmp_path / "bad", "htr_pos_embed", POS_EMBED_PREREG.replace("test/cer", "test/wer"),
                       commit=False)
    with pytest.raises(PreregError, match="metric 'test/wer'"):
        load_prereg(bad)
    assert main(["htr_pos_embed", "--root", str(path.parent)]) == 0
    assert capsys.readouterr().out.split() == sweep_overrides(load_prereg(path), "model/pos_embed")[2:]
