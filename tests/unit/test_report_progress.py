"""A report of a sweep still in progress, of a directory that is no sweep, or of jobs of another table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import exploratory_report

from cvt_lab.report.__main__ import main
from cvt_lab.rundir import RunDir


def write(sweep: Path, option: str, seed: int, status: str, acc: float | None = None) -> Path:
    d = sweep / "model" / f"conv_proj={option},seed={seed}"
    d.mkdir(parents=True)
    r = {"status": status, "seed": seed, "experiment": {"table": "table8", "row": option},
         "overrides": [f"model/conv_proj={option}", f"seed={seed}"]}
    if acc is not None:
        r["test/acc1"] = acc
    (d / "results.json").write_text(json.dumps(r))
    return d


def test_running_jobs_show_as_running_and_the_table_as_incomplete(tmp_path, no_model_counts):
    sweep = tmp_path / "table8_cpu"
    for seed, acc in enumerate([0.80, 0.81]):
        write(sweep, "all", seed, "finished", acc)
        write(sweep, "none", seed, "finished", acc - 0.1)
    alive = write(sweep, "stage1", 0, "running")
    killed = write(sweep, "stage1", 1, "running")  # its process is gone: no one holds its lock
    with RunDir(alive).lock():  # a job's process owns its directory while it runs
        paths = exploratory_report(sweep, tmp_path / "out")
    md = paths["md"].read_text()
    assert md.startswith("**Incomplete: 1 job still running**") and "conv_proj=stage1,seed=0" in md.splitlines()[0]
    rows = {r["option"]: r for r in csv.DictReader(paths["csv"].open())}
    assert "running seeds [0]" in rows["stage1"]["status"]  # the running job is not a failure
    assert "failed seed 0" not in rows["stage1"]["status"]
    assert "failed seed 1" in rows["stage1"]["status"] and "killed" in rows["stage1"]["status"]
    assert RunDir(killed).read_record().status == "running"  # the report only reads


def test_a_finished_sweep_is_not_called_incomplete(tmp_path, no_model_counts):
    sweep = tmp_path / "table8_cpu"
    write(sweep, "all", 0, "finished", 0.8)
    assert not exploratory_report(sweep, tmp_path / "out")["md"].read_text().startswith("**Incomplete")


def test_a_directory_that_is_no_sweep_is_refused(tmp_path, capsys):
    (tmp_path / "table8_cpu").mkdir()
    with pytest.raises(ValueError, match="is not a sweep"):
        exploratory_report(tmp_path / "table8_cpu", tmp_path / "out")
    assert main([str(tmp_path / "table8_cpu"), "--out", str(tmp_path / "out")]) == 2
    assert "is not a sweep" in capsys.readouterr().err
    assert not (tmp_path / "out" / "table8.md").exists()


def test_jobs_of_no_row_of_the_table_are_refused(tmp_path):
    sweep = tmp_path / "table8_cpu"
    write(sweep, "all", 0, "finished", 0.8)
    with pytest.raises(ValueError, match="none of the 1 jobs .* belongs to a row of table7.*--table"):
        exploratory_report(sweep, tmp_path / "out", table="table7")
