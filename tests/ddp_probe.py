"""A test-only callback, added to a run through the callbacks group (``+callbacks.probe={_target_: ddp_probe.Probe,
...}``, with tests/ on PYTHONPATH): what each rank trains on, and a preemption at a chosen step."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class Probe(Callback):
    """Writes one JSON line per training step and rank into ``out/rank<R>.jsonl``: the step, the digest of the
    augmented images and labels the rank trains on, and of the random stream its dropout and drop path draw from
    (the torch generator's state as the step starts). ``signal_at``: the process sends itself SLURM's requeue signal
    (SIGUSR1) as that step starts; ``exit_at``: it dies (os._exit, as a preempted job) as that step starts."""

    def __init__(self, out: str, signal_at: int = -1, exit_at: int = -1):
        self.out, self.signal_at, self.exit_at = Path(out), signal_at, exit_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self.exit_at:
            os._exit(3)
        images, labels = batch
        line = {"step": step, "epoch": trainer.current_epoch, "images": digest(images), "labels": digest(labels),
                "rng": digest(torch.get_rng_state())}
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / f"rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        if step == self.signal_at:
            os.kill(os.getpid(), signal.SIGUSR1)
