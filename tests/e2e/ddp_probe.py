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

    def __init__(self):
        # From the environment, not the config: the probe observes (and kills) a run without being part of its
        # identity, so a requeued job comes back with the config it had (cvt_lab.results.identity_of).
        env = os.environ
        self.out = Path(env["DDP_PROBE_OUT"])
        self.signal_at, self.exit_at = int(env.get("DDP_PROBE_SIGNAL_AT", -1)), int(env.get("DDP_PROBE_EXIT_AT", -1))

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
