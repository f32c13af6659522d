"""cvt_lab.report on hand-made sweep results: claims and verdicts, failed / missing / running rows, and honest
grouping. The paper's tables (configurations, Tables 3 and 4): test_paper_tables.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import rows_of, write_job
from conftest import exploratory_report as report

from cvt_lab.report import load_paper_tables


def write_rows(sweep: Path, table: str, axis: str, accs: dict[str, list[float]]) -> None:
    group, name = axis.split("/")
    for option, values in accs.items():
        for seed, acc in enumerate(values):
            d = sweep / group / f"{name}={option},seed={seed}"
            d.mkdir(parents=True)
            r = {"status": "finished", "test/acc1": acc / 100, "seed": seed,
                 "experiment": {"table": table, "row": option},
                 "overrides": [f"{axis}={option}", f"seed={seed}"]}
            (d / "results.json").write_text(json.dumps(r))


# every report here skips the paper-scale counts: these tests are of the verdicts and the grouping
pytestmark = pytest.mark.usefixtures("no_model_counts")


def test_report_states_the_claim_and_answers_it_per_row(tmp_path):
    """Table 8's claim (every linear stage costs accuracy) on synthetic rows: a clearly worse, b clearly
    better (against the paper), c within noise of the reference d."""
    sweep = tmp_path / "table8_cpu"
    write_rows(sweep, "table8", "model/conv_proj", {"none": [70.0, 71.0, 70.5], "stage1": [85.0, 86.0, 85.5],
                                                     "stages12": [79.0, 81.0, 80.0], "all": [79.5, 80.5, 80.0]})
    paths = report(sweep, tmp_path / "out")
    rows = {r["option"]: r for r in csv.DictReader(paths["csv"].open())}
    assert [rows[o]["verdict"] for o in ("none", "stage1", "stages12")] == ["agrees", "disagrees", "not separated"]
    assert rows["all"]["verdict"] == "" and rows["none"]["expect"] == "-"
    md = paths["md"].read_text()
    assert "**The claim tested:** The convolutional projection" in md
    assert "**Exploratory: claim does not reproduce at this scale**" in md and "b -: disagrees" in md


def test_rows_at_the_ceiling_judge_nothing(tmp_path):
    """Table 5 as the CPU scale once ran it: DeiT-S and every CvT row near 100%. Row b is compared with DeiT-S
    (vs) but DeiT-S sits at the ceiling, and the CvT rows have no registered margin: the claim is not tested
    (it was printed as reproduced)."""
    sweep = tmp_path / "table5_cpu"
    write_rows(sweep, "table5", "model/pos_embed", {
        "deit_s": [99.0, 98.5, 99.5], "deit_s_none": [25.0, 26.0, 25.5], "every": [99.0, 99.5, 99.2],
        "first": [99.1, 99.4, 99.0], "last": [98.9, 99.6, 99.3], "none": [99.2, 99.3, 99.1]})
    paths = report(sweep, tmp_path / "out")
    rows = {r["option"]: r for r in csv.DictReader(paths["csv"].open())}
    assert rows["deit_s_none"]["vs"] == "deit_s" and float(rows["deit_s_none"]["paper_diff"]) == pytest.approx(-1.8)
    assert float(rows["deit_s_none"]["ours_diff"]) == pytest.approx(25.5 - 99.0)
    assert rows["deit_s_none"]["verdict"] == "not judged" and rows["deit_s"]["verdict"] == ""
    assert "at the ceiling" in rows["deit_s_none"]["not_judged_why"]
    ceiling = {rows[o]["not_judged_why"] for o in ("every", "first", "last")}
    assert ceiling == {"row f at the ceiling (99.20% >= 97%)"}
    md = paths["md"].read_text()
    assert "**Exploratory: claim not tested at this scale**" in md and "-1.8 vs a" in md
    assert "(not part of the claim)" in md


def test_every_claimed_row_has_a_sign_and_compares_with_a_row_of_its_table():
    for table in ("table5", "table6", "table7", "table8"):
        spec = load_paper_tables()[table]
        assert spec["claim"] and spec["reference"] in {r["option"] for r in spec["rows"]}
        for row in spec["rows"]:
            assert row.get("expect") in (None, "+", "-", "0"), row
            assert row.get("vs", spec["reference"]) in {r["option"] for r in spec["rows"]}, row
        assert any(r.get("expect") for r in spec["rows"]), table


def test_report_compares_rows_and_marks_failed_and_missing(tmp_path):
    sweep = tmp_path / "table7_cpu"
    for seed, (a, b) in enumerate([(0.90, 0.80), (0.92, 0.81), (0.94, 0.85)]):
        write_job(sweep, "model/kv_stride", "stride2", seed, b)
        if seed < 2:
            write_job(sweep, "model/kv_stride", "stride1", seed, a)
    write_job(sweep, "model/kv_stride", "stride1", 2, None, error="boom\nsecond line | pipe")
    paths = report(sweep, tmp_path / "out")
    rows = {r["option"]: r for r in csv.DictReader(paths["csv"].open())}
    s1, s2 = rows["stride1"], rows["stride2"]
    assert float(s2["ours_top1_mean"]) == pytest.approx(100 * (0.80 + 0.81 + 0.85) / 3)
    assert s2["status"] == "ok" and s2["n"] == "3"
    assert s1["n"] == "2" and s1["vs"] == "stride2"
    # Welch: the two rows' means over their own seeds (seeds do not pair runs of different models)
    assert float(s1["ours_diff"]) == pytest.approx(100 * ((0.90 + 0.92) / 2 - (0.80 + 0.81 + 0.85) / 3))
    assert float(s1["ours_diff_ci_low"]) < float(s1["ours_diff"]) < float(s1["ours_diff_ci_high"])
    assert s1["expect"] == "+" and s1["verdict"] in ("agrees", "not separated")
    assert float(s1["paper_diff"]) == pytest.approx(0.7)
    assert "failed seed 2: boom second line / pipe" in s1["status"]
    md = paths["md"].read_text()
    assert "82.3" in md and "(reference)" in md and "6.55" in md
    assert paths["png"].stat().st_size > 0


def test_missing_rows_are_listed(tmp_path):
    sweep = tmp_path / "table8_cpu"
    write_job(sweep, "model/conv_proj", "all", 0, 0.5)
    paths = report(sweep, tmp_path / "out")
    md = paths["md"].read_text()
    assert "row a (none): missing seeds [0]" in md and "row d (all)" not in md.split("Failed or missing")[1]


# ------------------------------------------------------------------------------- honest grouping (issue 10, case 6)


def write_record(sweep: Path, name: str, option: str, seed: int, acc: float | None, *, table: str = "table7",
                 axis: str = "model/kv_stride", identity: bool = True, error: str | None = None, **config) -> None:
    """A job's results.json as training writes it, with its run identity (``identity=False``: an older
    record, overrides only). ``config``: dotted keys beyond the row and the seed (``recipe.epochs=2``)."""
    import hashlib

    d = sweep / name
    d.mkdir(parents=True)
    keys = {"model.kv_stride": option, "recipe.epochs": 1, "recipe.optimizer.lr": 5e-4, **config, "seed": seed}
    r = {"status": "failed" if error else "finished", "error": error, "test/acc1": acc, "seed": seed,
         "model": "cvt_tiny", "params": 570058, "experiment": {"table": table, "axis": axis, "row": option},
         "overrides": [f"{axis}={option}", f"seed={seed}", *(f"{k}={v}" for k, v in config.items())]}
    if identity:
        r["identity_config"] = keys
        r["identity"] = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()
    (d / "results.json").write_text(json.dumps(r))


def full_table(sweep: Path, prefix: str = "", seeds=(0, 1, 2), **config) -> None:
    for seed in seeds:
        for option, acc in (("stride1", 0.9), ("stride2", 0.8)):
            write_record(sweep, f"{prefix}{option},seed={seed}", option, seed, acc + seed / 100, **config)


def sections_of(paths) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in csv.DictReader(paths["csv"].open()):
        out.setdefault(r["setting"], []).append(r)
    return out


def test_jobs_of_other_epochs_make_a_table_of_their_own(tmp_path):
    sweep = tmp_path / "table7_cpu"
    full_table(sweep, "e1/")
    full_table(sweep, "e2/", seeds=(0,), **{"recipe.epochs": 2})
    paths = report(sweep, tmp_path / "out")
    sections = sections_of(paths)
    assert set(sections) == {"recipe.epochs=1", "recipe.epochs=2"}
    assert [r["n"] for r in sections["recipe.epochs=1"]] == ["3", "3"]
    assert [r["n"] for r in sections["recipe.epochs=2"]] == ["1", "1"]
    md = paths["md"].read_text()
    assert "## Setting 1 of 2: recipe.epochs=1" in md and "## Setting 2 of 2: recipe.epochs=2" in md
    assert "6 jobs used (6 finished), seeds [0, 1, 2]." in md and "2 jobs used (2 finished), seeds [0]." in md
    # its seeds are its own, not the sweep's
    assert "Failed or missing (or still running): none." in md.split("## Setting 2")[1]


def test_an_extra_swept_axis_is_never_collapsed(tmp_path):
    sweep = tmp_path / "table7_cpu"
    full_table(sweep, "lr1/", **{"recipe.optimizer.lr": 1e-3})
    full_table(sweep, "lr2/", **{"recipe.optimizer.lr": 5e-4})
    sections = sections_of(report(sweep, tmp_path / "out"))
    assert set(sections) == {"recipe.optimizer.lr=0.001", "recipe.optimizer.lr=0.0005"}
    assert all(r["n"] == "3" for rows in sections.values() for r in rows)


def test_rows_that_differ_beyond_their_option_are_not_compared(tmp_path):
    """Row a at 1 epoch, row b at 2: the table would compare epochs, not strides."""
    sweep = tmp_path / "table7_cpu"
    write_record(sweep, "a", "stride1", 0, 0.9)
    write_record(sweep, "b", "stride2", 0, 0.8, **{"recipe.epochs": 2})
    sections = sections_of(report(sweep, tmp_path / "out"))
    assert set(sections) == {"recipe.epochs=1", "recipe.epochs=2"}
    assert {r["option"]: r["n"] for r in sections["recipe.epochs=1"]} == {"stride1": "1", "stride2": "0"}


def test_a_row_run_in_two_variants_makes_a_table_for_each(tmp_path):
    sweep = tmp_path / "table7_cpu"
    full_table(sweep, seeds=(0,))
    write_record(sweep, "wide", "stride1", 0, 0.95, **{"model.dims": [16, 32, 64]})
    sections = sections_of(report(sweep, tmp_path / "out"))
    assert set(sections) == {"row stride1: model.dims=(not set)", "row stride1: model.dims=[16, 32, 64]"}
    assert all({r["option"]: r["n"] for r in rows} == {"stride1": "1", "stride2": "1"} for rows in sections.values())


def test_duplicates_are_reported_and_counted_once(tmp_path):
    sweep = tmp_path / "table7_cpu"
    full_table(sweep, "a/")
    write_record(sweep, "b/again", "stride1", 0, 0.5)  # the same identity as a/stride1,seed=0
    paths = report(sweep, tmp_path / "out")
    rows = rows_of(paths)
    assert rows["stride1"]["n"] == "3" and float(rows["stride1"]["ours_top1_mean"]) == pytest.approx(91.0)
    md = paths["md"].read_text()
    assert "Duplicates" in md
    assert "row stride1 seed 0: `b/again` (finished, 50.00) beside the used `a/stride1,seed=0`" in md


def test_header_seeds_and_counts_come_from_the_jobs(tmp_path):
    sweep = tmp_path / "table7_cpu"
    full_table(sweep)
    (sweep / "multirun.yaml").write_text("experiment: {table: table7}\nscale: {name: cpu}\n"
                                         "hydra: {overrides: {task: [experiment=ablation_kv_stride, seed=0]}}\n")
    md = report(sweep, tmp_path / "out")["md"].read_text()
    assert "6 jobs used (6 finished), seeds [0, 1, 2]." in md and "seeds [0]" not in md
    assert sum(line.startswith("| `stride") for line in md.splitlines()) == 6  # every job used, with its identity
    assert "python -m cvt_lab experiment=ablation_kv_stride seed=0 -m" in md  # the last command, said as such


def test_records_without_identity_are_grouped_by_overrides(tmp_path):
    sweep = tmp_path / "table7_cpu"
    full_table(sweep, "old1/", identity=False, **{"scale.epochs": 1})
    full_table(sweep, "old2/", identity=False, seeds=(0,), **{"scale.epochs": 2})
    paths = report(sweep, tmp_path / "out")
    sections = sections_of(paths)
    expected = {f"records without a run identity, grouped by their overrides: scale.epochs={e}" for e in (1, 2)}
    assert set(sections) == expected


def test_a_failure_without_identity_joins_its_setting(tmp_path):
    sweep = tmp_path / "table7_cpu"
    write_record(sweep, "ok", "stride2", 0, 0.8, **{"scale.epochs": 1})
    write_record(sweep, "crash", "stride1", 0, None, identity=False, error="killed", **{"scale.epochs": 1})
    sections = sections_of(report(sweep, tmp_path / "out"))
    assert len(sections) == 1
    rows = {r["option"]: r for r in next(iter(sections.values()))}
    assert rows["stride1"]["status"] == "failed seed 0: killed"


def test_row_keys_of_an_experiment():
    from cvt_lab.report.paper import row_keys

    assert row_keys({"row": "${hydra:runtime.choices.model/pos_embed}"}) == ["model"]
    assert row_keys({"row": "${hydra:runtime.choices.model}@${recipe.image_size}"}) == ["model", "recipe.image_size"]
    assert row_keys({"row": "${hydra:runtime.choices.model}/${hydra:runtime.choices.data}"}, ["checkpoint"]) == [
        "checkpoint", "data", "model"]


def test_table4_one_table_for_each_models_checkpoint_and_another_for_a_second_checkpoint(tmp_path):
    """Each model fine-tunes its own checkpoint (the checkpoint is a row key of Table 4); a second
    checkpoint of the same model is another setting."""
    sweep = tmp_path / "table4_paper"

    def job(name: str, model: str, data: str, checkpoint: str, acc: float) -> None:
        config = {"model.name": model, "data.name": data, "checkpoint": checkpoint, "seed": 0}
        d = sweep / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({
            "status": "finished", "test/acc1": acc, "seed": 0, "model": model, "data": data, "image_size": 384,
            "experiment": {"table": "table4", "row": f"{model}/{data}"}, "identity_config": config,
            "identity": checkpoint + name}))

    job("a", "cvt13", "cifar10", "ckpt13", 0.98)
    job("b", "cvt21", "cifar10", "ckpt21", 0.99)
    job("c", "cvt13", "cifar10", "ckpt13b", 0.97)
    sections = sections_of(report(sweep, tmp_path / "out"))
    assert set(sections) == {"row cvt13/cifar10: checkpoint=ckpt13", "row cvt13/cifar10: checkpoint=ckpt13b"}
    for rows in sections.values():  # CvT-21's own checkpoint is compared with either
        assert {r["option"] for r in rows if r["n"] == "1"} == {"cvt13/cifar10", "cvt21/cifar10"}


def test_a_sweep_in_progress_shows_running_jobs_and_is_incomplete(tmp_path):
    sweep = tmp_path / "table7_cpu"
    write_rows(sweep, "table7", "model/kv_stride", {"stride1": [60.0, 61.0], "stride2": [59.0]})
    d = sweep / "model" / "kv_stride=stride2,seed=1"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"status": "running", "seed": 1, "overrides": [
        "model/kv_stride=stride2", "seed=1"], "experiment": {"table": "table7", "row": "stride2"}}))
    from cvt_lab.rundir import RunDir

    with RunDir(d).lock():  # a running job's process owns its directory (a record nobody owns is a killed run's)
        md = report(sweep, tmp_path / "out")["md"].read_text()
    assert "row b (stride2): running seeds [1]" in md and "failed seed 1" not in md
    assert "**Exploratory: claim incomplete at this scale**" in md
