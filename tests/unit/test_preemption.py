"""Preemption-safe runs: the callbacks group, which checkpoint a run resumes from, SLURM's requeue signal (the
2-process SLURM job killed and resumed is in test_ddp.py)."""

from __future__ import annotations

import logging
import os
import signal
from types import SimpleNamespace

import pytest
from conftest import compose_config, fake_checkpoint
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import (
    EarlyStopping,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
)

from cvt_lab.callbacks import RequeueBetweenSteps
from cvt_lab.building import build_callbacks
from cvt_lab.errors import JobError
from cvt_lab.job import resume_checkpoint


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
    with caplog.at_level(logging.WARNING, logger="cvt_lab.rundir"):
        assert resume_checkpoint(cfg, tmp_path) == str(step)
    assert "hpc_ckpt_1.ckpt cannot be read" in caplog.text


def test_requeue_signal_is_handled_at_the_end_of_the_step(monkeypatch):
    """Under SLURM, SIGUSR1 only marks the request; Lightning's save-and-requeue runs once, at the step's end."""
    calls = []
    trainer = SimpleNamespace(
        _accelerator_connector=SimpleNamespace(cluster_environment=SLURMEnvironment()),
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision),
        _signal_connector=SimpleNamespace(_slurm_sigusr_handler_fn=lambda signum, frame: calls.append(signum)))
    requeue = RequeueBetweenSteps()
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        requeue.on_train_start(trainer, None)
        requeue.on_train_batch_end(trainer, None, None, None, 0)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == []
        requeue.on_train_batch_end(trainer, None, None, None, 1)
        requeue.on_train_batch_end(trainer, None, None, None, 2)
        assert calls == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
