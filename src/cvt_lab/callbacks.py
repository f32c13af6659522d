"""Callbacks every run gets from the job itself; the configurable ones are the ``callbacks`` group (conf/callbacks/)."""

from __future__ import annotations

import signal
import threading
import time

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback


class StartupTimer(Callback):
    """Records when the first training batch starts, for the start-up figure in results.json."""

    def __init__(self, started: float):
        self.started = started
        self.startup_s: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.startup_s is None:
            self.startup_s = time.time() - self.started


class RequeueBetweenSteps(Callback):
    """SLURM's requeue signal handled between two training steps.

    Under SLURM, Lightning answers the job's requeue signal (SIGUSR1 by default: ``sbatch --signal=USR1@90``) by
    saving ``hpc_ckpt_N.ckpt`` into the run directory and requeueing the job (``scontrol requeue``), from inside
    the signal handler: wherever the signal lands, halfway through a step too, and a checkpoint of half a step
    does not resume exactly. This callback takes the signal over once training starts and runs Lightning's own
    save-and-requeue at the end of the step it arrived in, on every rank at the same step (one all-reduce of a
    flag per step, only under SLURM with auto-requeue). Lightning restores the previous handlers when it ends.
    """

    def __init__(self):
        self.signum: int | None = None
        self.received = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning keeps the cluster environment in its accelerator connector (its signal connector reads it there)
        env = trainer._accelerator_connector.cluster_environment
        on_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there
        if isinstance(env, SLURMEnvironment) and env.auto_requeue and on_main_thread:
            self.signum = env.requeue_signal
            signal.signal(self.signum, self._receive)

    def _receive(self, signum, frame) -> None:
        self.received = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if self.signum is not None and trainer.strategy.reduce_boolean_decision(self.received, all=False):
            self.received = False
            trainer._signal_connector._slurm_sigusr_handler_fn(self.signum, None)
