"""W&B, offline: a failed job's run ends failed, the run id is kept in the run directory and reused when the
run goes on, checkpoints upload as artifacts (logger.log_model), and a report logs its table and plot into
the sweep's group. Checked by reading the offline run files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import TINY, compose_config, wandb_records, write_job

from cvt_lab.loggers import stored_run_id
from cvt_lab.errors import JobError
from cvt_lab.job import run

pytest.importorskip("wandb", reason="the wandb extra")
WANDB = (*TINY, "model.img_size=16", "logger=wandb", "logger.mode=offline", "logger.group=g1")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    for key in ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def records(run: Path) -> list:
    import wandb

    wandb.teardown()  # the W&B service writes the run file in the background: stopping it flushes the file
    return list(wandb_records(next(run.glob("*.wandb"))))


def test_failed_run_ends_failed_and_its_id_carries_on(tmp_path):
    # A learning rate this large makes the loss NaN at the second step: the job fails after W&B started.
    with pytest.raises(JobError, match="training loss is nan"):
        run(compose_config(*WANDB, "recipe.optimizer.lr=1e30", "recipe.schedule.warmup_epochs=0"), tmp_path)
    run_id = (tmp_path / "wandb" / "run_id").read_text().strip()
    (failed,) = offline_runs(tmp_path)
    assert failed.name.endswith(f"-{run_id}")
    assert [r.exit.exit_code for r in records(failed) if r.HasField("exit")] == [1]

    # The same directory again (no checkpoint was written, so it starts afresh): the same W&B run, now finished,
    # and logger.log_model=true uploads the checkpoints as an artifact.
    assert run(compose_config(*WANDB, "logger.log_model=true"), tmp_path).status == "finished"
    # W&B names a run's folder by the second it started: a run that starts in the failed one's second gets "-1" added.
    first, second = offline_runs(tmp_path)
    assert first == failed and re.search(f"-{run_id}(-\\d+)?$", second.name)
    second_records = records(second)
    assert [r.exit.exit_code for r in second_records if r.HasField("exit")] == [0]
    assert next(r.run for r in second_records if r.HasField("run")).run_id == run_id
    artifacts = [r.artifact for r in second_records if r.HasField("artifact")]
    assert artifacts and artifacts[0].type == "model"


def test_run_id_is_generated_once_and_kept(tmp_path):
    run_id = stored_run_id(tmp_path)
    assert len(run_id) == 8 and stored_run_id(tmp_path) == run_id
    assert stored_run_id(tmp_path / "other") != run_id  # not derived from the path
    older = tmp_path / "older"  # W&B ran here before ids were kept: its id goes on
    (older / "wandb" / "offline-run-20260101_120000-abc123xy").mkdir(parents=True)
    assert stored_run_id(older) == "abc123xy"


def test_report_logs_its_table_and_plot_into_the_sweeps_group(tmp_path):
    from omegaconf import OmegaConf

    from cvt_lab.report.__main__ import main

    sweep = tmp_path / "table7_cpu"
    for seed in (0, 1):
        write_job(sweep, "model/kv_stride", "stride1", seed, 0.9)
        write_job(sweep, "model/kv_stride", "stride2", seed, 0.8)
    job = next(sweep.glob("*/*"))  # a job's config names the project and group the sweep logged to
    (job / ".hydra").mkdir()
    OmegaConf.save({"logger": {"project": "cvt-paper", "entity": None, "group": "table7_cpu"}},
                   job / ".hydra" / "config.yaml")
    assert main([str(sweep), "--out", str(tmp_path / "out"), "--wandb"]) == 0
    (report_run,) = sorted((sweep / "wandb").glob("offline-run-*"))
    run = next(r.run for r in records(report_run) if r.HasField("run"))
    assert (run.project, run.run_group, run.job_type) == ("cvt-paper", "table7_cpu", "report")
    (table_file,) = (report_run / "files" / "media" / "table").rglob("*.table.json")
    table = json.loads(table_file.read_text())
    rows = {row[table["columns"].index("option")]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert rows["stride1"]["paper_top1"] == 82.3 and rows["stride1"]["ours_top1_mean"] == pytest.approx(90.0)
    assert list((report_run / "files" / "media" / "images").rglob("*.png"))  # the plot
