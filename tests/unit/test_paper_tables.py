"""The paper's tables as cvt_lab runs them: each row's configuration against the paper's params / MACs columns,
the experiments that sweep the rows, docs/paper.md, and the Table 3 and Table 4 reports (models and data sets,
on hand-made results). The report's statistics and grouping: test_report.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT, rows_of
from conftest import exploratory_report as report
from omegaconf import OmegaConf

from cvt_lab.report import load_paper_tables, paper_config_size


@pytest.mark.parametrize("table", ["table5", "table6", "table7"])
def test_paper_configuration_matches_the_papers_columns(table):
    """Params / MACs counted at the paper's configuration agree with the paper's columns (the paper rounds
    params to 0.1M or whole millions; its FLOPs leave out part of the attention, hence 2% on MACs)."""
    spec = load_paper_tables()[table]
    for row in spec["rows"]:
        params, gmacs = paper_config_size(spec, row)
        if "params" in row:
            tol = 0.5 if float(row["params"]).is_integer() else 0.15
            assert abs(params - row["params"]) <= tol, (row, params)
        if "gmacs" in row:
            assert gmacs == pytest.approx(row["gmacs"], rel=0.02), (row, gmacs)


def test_every_paper_row_is_an_option_of_its_group():
    from cvt_lab.paths import config_dir

    for name, spec in load_paper_tables().items():
        for row in spec["rows"]:
            if "size" in row:  # Tables 2, 3, 4: a model (x a dataset) at a size, each an option of its group
                assert (config_dir() / "model" / f"{row['preset']}.yaml").is_file(), (name, row)
                assert not row.get("data") or (config_dir() / "data" / f"{row['data']}.yaml").is_file(), (name, row)
            else:
                assert (config_dir() / spec["axis"] / f"{row['option']}.yaml").is_file(), (name, row)


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
    ours_params, ours_gmacs = paper_config_size(spec, row)
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
    assert float(rows["cvt13/cifar10"]["paper_top1"]) == 98.83
    assert float(rows["cvtw24/flowers102"]["paper_top1"]) == 99.72
    assert float(rows["cvt13/pets"]["ours_gmacs"]) == pytest.approx(16.3, rel=0.015)  # CvT-13 at 384
    md = paths["md"].read_text()
    assert "pipeline check on digits and are NOT comparable to the paper's datasets" in md
    assert "98.83" in md and "Failed or missing (or still running): none." in md


def test_table4_report_paper_scale_rows_by_model_and_dataset(tmp_path):
    sweep = tmp_path / "table4_paper"
    write_model_job(sweep, "cvt13/cifar10", 0, 0.985, model="cvt13", image_size=384, data="cifar10", table="table4")
    write_model_job(sweep, "cvt13/pets", 0, None, model="cvt13", image_size=384, data="pets", table="table4",
                    error="no dataset at /data/pets")
    rows = rows_of(report(sweep, tmp_path / "out"))
    assert "cvt_tiny/digits" not in rows
    assert rows["cvt13/cifar10"]["status"] == "ok"
    assert float(rows["cvt13/cifar10"]["ours_top1_mean"]) == pytest.approx(98.5)
    assert "failed seed 0: no dataset" in rows["cvt13/pets"]["status"]
    assert rows["cvt21/cifar10"]["status"] == "missing seeds [0]"


# ------------------------------------------------------------------------------- one place for the paper's facts


def sweeper_params(experiment: str) -> dict[str, str]:

    from cvt_lab.paths import config_dir

    cfg = OmegaConf.load(config_dir() / "experiment" / f"{experiment}.yaml")
    return OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=False)


def scale_block(scale: str) -> dict:

    from cvt_lab.paths import config_dir

    return OmegaConf.to_container(OmegaConf.load(config_dir() / "scale" / f"{scale}.yaml").scale, resolve=False)


def csv_values(text: str) -> list[str]:
    return [v.strip() for v in str(text).split(",")]


def test_each_table_is_run_by_one_experiment():
    tables = load_paper_tables()
    assert {t for t, spec in tables.items() if "experiment" in spec} == {f"table{i}" for i in range(3, 9)} | {
        "htr_pos_embed", "htr_conv_embed", "htr_kv_stride"}  # handwriting: integration/test_htr_tables.py
    assert "experiment" not in tables["table2"]  # counted, not trained


@pytest.mark.parametrize("table", ["table5", "table6", "table7", "table8"])
def test_ablation_sweeps_run_the_papers_rows(table):
    """The sweeper's rows (Hydra needs them in the experiment config) are the paper's, in its order."""
    spec = load_paper_tables()[table]
    params = sweeper_params(spec["experiment"])
    assert csv_values(params[spec["axis"]]) == [r["option"] for r in spec["rows"]]
    assert spec["reference"] in csv_values(params[spec["axis"]])
    assert spec["row_keys"] == ["model"]


def test_table3_scales_run_the_papers_rows_or_their_stand_ins():
    spec = load_paper_tables()["table3"]
    for scale in ("cpu", "paper"):
        block = scale_block(scale)["imagenet"]
        swept = {f"{m}@{s}" for m in csv_values(block["models"]) for s in csv_values(block["sweep_sizes"])}
        stand_ins = (spec["scales"].get(scale) or {}).get("stand_ins")
        expected = set(stand_ins.values()) if stand_ins else {r["option"] for r in spec["rows"] if r.get("sweep", True)}
        assert swept == expected, scale
    assert spec["row_keys"] == ["model", "recipe.image_size"]


def test_table4_scales_run_the_papers_datasets():
    spec = load_paper_tables()["table4"]
    paper_data = list(dict.fromkeys(r["data"] for r in spec["rows"]))
    assert csv_values(scale_block("paper")["transfer"]["datasets"]) == paper_data
    cpu_data = [r["data"] for r in spec["scales"]["cpu"]["extra_rows"]]
    assert csv_values(scale_block("cpu")["transfer"]["datasets"]) == cpu_data
    assert spec["row_keys"] == ["checkpoint", "data", "model"]


def test_docs_paper_prints_the_tables_of_paper_tables_yaml():
    from cvt_lab.report.paper import paper_tables_markdown

    doc = (REPO_ROOT / "docs" / "paper.md").read_text()
    assert paper_tables_markdown() in doc, "regenerate docs/paper.md's tables: see the comment above them"


def test_cpu_scale_runs_each_ablation_on_its_canvas_task():
    """Each ablation's CPU-scale data set is a data option with the task the claim needs; the paper scale
    names none for them (its ImageNet folder; only the handwriting tables get IAM lines there)."""
    from cvt_lab.paths import config_dir

    cpu, paper = scale_block("cpu"), scale_block("paper")
    tasks = dict.fromkeys(("table5", "table6", "table7", "table8"), "class_position")
    for table, task in tasks.items():
        option = cpu["tables"][table]["data"]
        assert OmegaConf.load(config_dir() / "data" / f"{option}.yaml").task == task
        assert sweeper_params(load_paper_tables()[table]["experiment"])["data"] == "${experiment.data}"
    assert not set(tasks) & set(paper.get("tables", {}))
