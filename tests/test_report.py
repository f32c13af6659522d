"""cvt_lab.report on hand-made sweep results: statistics, failed / missing rows, and the paper's columns."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from cvt_lab.report import load_paper_tables, mean_ci, paper_config_size, report


def write_job(sweep: Path, axis: str, option: str, seed: int, acc: float | None, error: str | None = None) -> None:
    d = sweep / axis.split("/")[0] / f"{axis.split('/')[1]}={option},seed={seed}"
    d.mkdir(parents=True)
    overrides = [f"{axis}={option}", f"seed={seed}", "experiment=ablation_kv_stride"]
    if error:
        r = {"status": "failed", "error": error, "overrides": overrides}
    else:
        r = {"status": "finished", "test/acc1": acc, "seed": seed, "params": 1000, "macs": 10,
             "experiment": {"table": "table7", "row": "${hydra:runtime.choices.model/kv_stride}"}, "overrides": overrides}
    (d / "results.json").write_text(json.dumps(r))


def test_mean_ci():
    m, half, sd = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and sd == 1.0 and half == pytest.approx(4.303 * 1 / math.sqrt(3), rel=1e-3)
    assert mean_ci([5.0]) == (5.0, None, None)


def test_report_pairs_by_seed_and_marks_failed_and_missing(tmp_path):
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
    assert s1["n"] == "2" and s1["n_pairs"] == "2"
    assert float(s1["ours_diff"]) == pytest.approx(100 * ((0.90 - 0.80) + (0.92 - 0.81)) / 2)  # paired by seed
    assert float(s1["ours_diff_ci_low"]) < float(s1["ours_diff"]) < float(s1["ours_diff_ci_high"])
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


@pytest.mark.parametrize("table", ["table5", "table6", "table7"])
def test_paper_configuration_matches_the_papers_columns(table):
    """Params / MACs counted at the paper's configuration agree with the paper's columns (the paper rounds
    params to 0.1M or whole millions; its FLOPs leave out part of the attention, hence 2% on MACs)."""
    spec = load_paper_tables()[table]
    for row in spec["rows"]:
        params, gmacs = paper_config_size(spec, row, spec["axis"])
        if "params" in row:
            tol = 0.5 if float(row["params"]).is_integer() else 0.15
            assert abs(params - row["params"]) <= tol, (row, params)
        if "gmacs" in row:
            assert gmacs == pytest.approx(row["gmacs"], rel=0.02), (row, gmacs)


def test_every_paper_row_is_an_option_of_its_group():
    from cvt_lab.paths import config_dir

    for name, spec in load_paper_tables().items():
        exp = (config_dir() / "experiment" / f"{spec['experiment']}.yaml").read_text()
        for row in spec["rows"]:
            if "size" in row:  # Tables 3, 4: a model (x a dataset) at a size, each an option of its group
                assert (config_dir() / "model" / f"{row['preset']}.yaml").is_file(), (name, row)
                assert not row.get("data") or (config_dir() / "data" / f"{row['data']}.yaml").is_file(), (name, row)
                continue
            assert (config_dir() / spec["axis"] / f"{row['option']}.yaml").is_file(), (name, row)
            assert row["option"] in exp, (name, row)


# ------------------------------------------------------------------------------- Tables 3 and 4 (models)


def write_model_job(sweep: Path, row: str | None, seed: int, acc: float | None, *, model: str, image_size: int = 32,
                    data: str = "digits", table: str = "table3", error: str | None = None) -> None:
    """A job of the imagenet / transfer sweeps; ``row=None`` stores the unresolved interpolation (older
    results.json), so the report has to make the row from the job's fields."""
    d = sweep / f"model={model},recipe.image_size={image_size},data={data},seed={seed}"
    d.mkdir(parents=True)
    overrides = [f"model={model}", f"recipe.image_size={image_size}", f"data={data}", f"seed={seed}"]
    if error:
        r = {"status": "failed", "error": error, "overrides": overrides}
    else:
        r = {"status": "finished", "test/acc1": acc, "seed": seed, "params": 570058, "macs": 4172032,
             "model": model, "image_size": image_size, "data": data, "overrides": overrides,
             "experiment": {"table": table, "row": row or "${hydra:runtime.choices.model}@${recipe.image_size}"}}
    (d / "results.json").write_text(json.dumps(r))


def rows_of(paths) -> dict[str, dict]:
    return {r["option"]: r for r in csv.DictReader(paths["csv"].open())}


def test_table3_report_cpu_stand_ins_and_rows_not_run(tmp_path):
    sweep = tmp_path / "table3_cpu"
    for seed, acc in enumerate([0.97, 0.98, 0.99]):
        write_model_job(sweep, "cvt_tiny@32", seed, acc, model="cvt_tiny")
    write_model_job(sweep, None, 0, 0.95, model="cvt_tiny", image_size=48)  # unresolved row: from the fields
    write_model_job(sweep, None, 1, None, model="cvt_tiny", image_size=48, error="out of memory")
    paths = report(sweep, tmp_path / "out")
    rows = rows_of(paths)
    a, c = rows["cvt13@224"], rows["cvt13@384"]
    assert a["ran_as"] == "cvt_tiny@32" and a["n"] == "3" and a["status"] == "ok"
    assert float(a["ours_top1_mean"]) == pytest.approx(98.0) and float(a["ours_top1_std"]) == pytest.approx(1.0)
    assert float(a["paper_top1"]) == 81.6 and float(a["paper_real"]) == 86.7 and float(a["paper_v2"]) == 70.4
    assert c["ran_as"] == "cvt_tiny@48" and c["n"] == "1"
    assert "failed seed 1: out of memory" in c["status"] and "missing seeds [2]" in c["status"]
    assert rows["cvt21@224"]["status"] == "not run at cpu scale" and rows["cvt21@224"]["n"] == "0"
    assert rows["cvtw24@384+22k"]["status"].startswith("not in this sweep: needs ImageNet-22k")
    md = paths["md"].read_text()
    assert "stands in for CvT-13 at 224 and 384" in md and "| ReaL |" not in md and "paper ReaL" in md
    assert "row c (cvt13@384): failed seed 1" in md.split("Failed or missing")[1]
    assert "(reference)" not in md and paths["png"].stat().st_size > 0


def test_table3_report_paper_scale_runs_the_papers_rows(tmp_path):
    sweep = tmp_path / "table3_paper"
    write_model_job(sweep, "cvt13@224", 0, 0.816, model="cvt13", image_size=224)
    write_model_job(sweep, "deit_s@224", 0, 0.798, model="deit_s", image_size=224)  # run although not in the sweep
    paths = report(sweep, tmp_path / "out")
    assert paths["md"].name == "table3_paper.md"
    rows = rows_of(paths)
    assert rows["cvt13@224"]["ran_as"] == "cvt13@224" and rows["cvt13@224"]["status"] == "ok"
    assert rows["deit_s@224"]["status"] == "ok" and rows["deit_s@224"]["n"] == "1"
    assert rows["cvt21@384"]["status"] == "missing seeds [0]"  # the paper scale runs it: missing, not "not run"
    assert rows["cvt13@384+22k"]["status"].startswith("not in this sweep")


@pytest.mark.parametrize("option,params,gmacs,rel", [
    ("cvt13@224", 20, 4.5, 0.015), ("cvt13@384", 20, 16.3, 0.015), ("cvt21@224", 32, 7.1, 0.015),
    ("cvt21@384", 32, 24.9, 0.015), ("cvtw24@384+22k", 277, 193.2, 0.015), ("deit_s@224", 22, 4.6, 0.015),
    ("cvt13@384+22k", 20, 16, 0.025), ("cvt21@384+22k", 32, 25, 0.015),  # the paper rounds these to 1G
])
def test_table3_params_and_macs_at_the_papers_configuration(tmp_path, option, params, gmacs, rel):
    spec = load_paper_tables()["table3"]
    row = next(r for r in spec["rows"] if r["option"] == option)
    assert row["params"] == params and row["gmacs"] == gmacs  # the paper's columns, as printed
    ours_params, ours_gmacs = paper_config_size(spec, row, spec["axis"])
    assert abs(ours_params - params) <= 0.5, (option, ours_params)
    assert ours_gmacs == pytest.approx(gmacs, rel=rel), (option, ours_gmacs)


def test_table3_report_macs_column(tmp_path):
    sweep = tmp_path / "table3_cpu"
    write_model_job(sweep, "cvt_tiny@32", 0, 0.9, model="cvt_tiny")
    rows = rows_of(report(sweep, tmp_path / "out"))
    for option, gmacs in {"cvt13@224": 4.5, "cvt13@384": 16.3, "cvt21@224": 7.1, "cvt21@384": 24.9,
                          "cvtw24@384+22k": 193.2}.items():
        assert float(rows[option]["paper_gmacs"]) == gmacs
        assert float(rows[option]["ours_gmacs"]) == pytest.approx(gmacs, rel=0.015), option


def test_table4_report_cpu_is_a_pipeline_check(tmp_path):
    sweep = tmp_path / "table4_cpu"
    for seed, acc in enumerate([0.96, 0.97]):
        write_model_job(sweep, "cvt_tiny/digits", seed, acc, model="cvt_tiny", table="table4")
    paths = report(sweep, tmp_path / "out")
    rows = rows_of(paths)
    assert len(rows) == 13  # 3 models x 4 datasets, and the CPU scale's digits row
    x = rows["cvt_tiny/digits"]
    assert x["n"] == "2" and x["status"] == "ok" and x["paper_top1"] == ""
    assert float(x["ours_top1_mean"]) == pytest.approx(96.5)
    assert all(r["status"] == "not run at cpu scale" for o, r in rows.items() if o != "cvt_tiny/digits")
    assert float(rows["cvt13/cifar10"]["paper_top1"]) == 98.83 and float(rows["cvtw24/flowers102"]["paper_top1"]) == 99.72
    assert float(rows["cvt13/pets"]["ours_gmacs"]) == pytest.approx(16.3, rel=0.015)  # CvT-13 at 384
    md = paths["md"].read_text()
    assert "pipeline check on digits and are NOT comparable to the paper's datasets" in md
    assert "98.83" in md and "Failed or missing: none." in md


def test_table4_report_paper_scale_rows_by_model_and_dataset(tmp_path):
    sweep = tmp_path / "table4_paper"
    write_model_job(sweep, "cvt13/cifar10", 0, 0.985, model="cvt13", image_size=384, data="cifar10", table="table4")
    write_model_job(sweep, "cvt13/pets", 0, None, model="cvt13", image_size=384, data="pets", table="table4",
                    error="no dataset at /data/pets")
    rows = rows_of(report(sweep, tmp_path / "out"))
    assert "cvt_tiny/digits" not in rows
    assert rows["cvt13/cifar10"]["status"] == "ok" and float(rows["cvt13/cifar10"]["ours_top1_mean"]) == pytest.approx(98.5)
    assert "failed seed 0: no dataset" in rows["cvt13/pets"]["status"]
    assert rows["cvt21/cifar10"]["status"] == "missing seeds [0]"
