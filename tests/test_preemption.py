"""Preemption-safe runs: the callbacks group, step checkpoints, SLURM's requeue signal and resuming mid-epoch."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import cli_env, compose_config, read_results
from lightning.pytorch.callbacks import (
    EarlyStopping,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
)

from cvt_lab.train import JobError, build_callbacks, resume_checkpoint, run

TESTS = Path(__file__).resolve().parent
# 2 epochs of 8 steps, with what draws random numbers per step (Mixup, drop path); a step checkpoint every 2 steps,
# the newest 2 kept.
RUN = ("data=synthetic", "data.num_samples=64", "recipe.batch_size=8", "recipe.epochs=2", "recipe.mixup=0.8",
       "model.drop_path=[0.1,0.1,0.1]", "trainer.enable_progress_bar=false",
       "callbacks.step_checkpoint.every_n_train_steps=2")
METRICS = ("test/acc1", "test/acc5", "val/acc1", "val/acc5", "test/loss", "epochs", "steps")


def test_callbacks_group_builds_lightning_callbacks(tmp_path):
    cfg = compose_config("callbacks=[ema,early_stopping]", "callbacks.step_checkpoint.every_n_train_steps=100",
                         "callbacks.ema.decay=0.99")
    built = {type(c): c for c in build_callbacks(cfg, tmp_path)}
    assert set(built) == {ModelCheckpoint, LearningRateMonitor, EMAWeightAveraging, EarlyStopping}
    epoch, step = (c for c in build_callbacks(cfg, tmp_path) if isinstance(c, ModelCheckpoint))
    assert epoch.dirpath == step.dirpath == str(tmp_path) and epoch.save_last and not step.save_last
    assert (epoch.every_n_epochs, step._every_n_train_steps, step.save_top_k, step.monitor) == (1, 100, 2, "step")
    assert built[EarlyStopping].monitor == "val/acc1"

    default = compose_config("callbacks.lr_monitor=null")  # an entry set to null is left out
    assert [type(c) for c in build_callbacks(default, tmp_path)] == [ModelCheckpoint, ModelCheckpoint]
    with pytest.raises(JobError, match=r"callbacks.checkpoint: .*every_n_epoch\b"):  # an argument it does not take
        build_callbacks(compose_config("+callbacks.checkpoint.every_n_epoch=2"), tmp_path)


def fake_checkpoint(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", b"weights")
    os.utime(path, (mtime, mtime))
    return path


def test_resume_takes_the_newest_readable_checkpoint_step_and_hpc_ones_too(tmp_path, caplog):
    cfg = compose_config()
    ckpts = tmp_path / "checkpoints"
    fake_checkpoint(ckpts / "epoch000.ckpt", 100)
    last = fake_checkpoint(ckpts / "last.ckpt", 100)  # written with its epoch's checkpoint: preferred
    assert resume_checkpoint(cfg, tmp_path) == str(last)
    step = fake_checkpoint(ckpts / "step00000120.ckpt", 200)  # a step checkpoint after it (mid-epoch)
    assert resume_checkpoint(cfg, tmp_path) == str(step)
    hpc = fake_checkpoint(tmp_path / "hpc_ckpt_1.ckpt", 300)  # Lightning's, on SLURM's requeue signal
    assert resume_checkpoint(cfg, tmp_path) == str(hpc)
    hpc.write_bytes(b"cut short")
    os.utime(hpc, (400, 400))
    with caplog.at_level(logging.WARNING, logger="cvt_lab.train"):
        assert resume_checkpoint(cfg, tmp_path) == str(step)
    assert "hpc_ckpt_1.ckpt cannot be read" in caplog.text


@pytest.mark.slow
def test_slurm_requeue_signal_saves_requeues_and_the_requeued_run_resumes_exactly(tmp_path, caplog):
    """A job under SLURM (its variables set) gets the requeue signal (SIGUSR1) during step 2: Lightning's save and
    requeue run at the end of that step (RequeueBetweenSteps): hpc_ckpt_1.ckpt in the run directory, `scontrol
    requeue <job id>` called (a fake here, which records the call). The job then dies at step 3, mid-epoch; the
    requeued job (the same config in the same directory) resumes from the hpc checkpoint and ends with the metrics
    of an uninterrupted run. Step checkpoints every 2 steps: the newest 2 are kept."""
    bin_dir, run_dir = tmp_path / "bin", tmp_path / "run"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    probe = f"+callbacks.probe={{_target_:ddp_probe.Probe,out:'{tmp_path / 'probe'}',signal_at:2,exit_at:3}}"
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "cvt", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "127.0.0.1",
             "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "cvt_lab", *RUN, probe, f"hydra.run.dir={run_dir}"], check=False,
                          capture_output=True, text=True, timeout=300, env=cli_env(**slurm))
    assert proc.returncode == 3, proc.stderr[-3000:]  # the probe's exit: killed as SLURM would
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert (run_dir / "hpc_ckpt_1.ckpt").is_file() and read_results(run_dir)["status"] == "running"

    expected = run(compose_config(*RUN), tmp_path / "straight")
    with caplog.at_level(logging.INFO, logger="cvt_lab.train"):
        resumed = run(compose_config(*RUN), run_dir)
    assert f"resuming from {run_dir / 'hpc_ckpt_1.ckpt'}" in caplog.text
    for key in METRICS:
        assert resumed.to_json()[key] == pytest.approx(expected.to_json()[key], abs=1e-6), key
    steps = sorted(p.name for p in (run_dir / "checkpoints").glob("step*.ckpt"))
    assert steps == ["step00000014.ckpt", "step00000016.ckpt"]

