"""cvt_lab.report on hand-made sweep results: statistics, failed / missing rows, and the paper's columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT, write_job
from omegaconf import OmegaConf

from cvt_lab.report import load_paper_tables, paper_config_size
from cvt_lab.report import report as report_with_prereg


def report(sweep: Path, out: Path, table: str | None = None, **kwargs):
    """The report of a hand-made sweep, with no pre-registration (exploratory) unless a test gives one."""
    kwargs.setdefault("prereg_root", out / "no-prereg")
    return report_with_prereg(sweep, out, table, **kwargs)


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


@pytest.fixture
def no_model_counts(monkeypatch):
    """Reports without building each row's paper-scale model (tests of the verdicts, not of the counts)."""
    monkeypatch.setattr("cvt_lab.report.rows.paper_config_size", lambda spec, row: (None, None))


def test_report_states_the_claim_and_answers_it_per_row(tmp_path, no_model_counts):
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


def test_rows_at_the_ceiling_judge_nothing(tmp_path, no_model_counts):
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
    from omegaconf import OmegaConf

    from cvt_lab.paths import config_dir

    cfg = OmegaConf.load(config_dir() / "experiment" / f"{experiment}.yaml")
    return OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=False)


def scale_block(scale: str) -> dict:
    from omegaconf import OmegaConf

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


def test_a_sweep_in_progress_shows_running_jobs_and_is_incomplete(tmp_path, no_model_counts):
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
