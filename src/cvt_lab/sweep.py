"""A sweep's arithmetic, shared by the pool launcher (hydra_plugins.cvt_lab_launcher) and the plan: where a job's
directory is and how many jobs run at once on the devices and cores at hand."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def job_dir(sweep_config: DictConfig) -> Path:
    """A job's directory, resolved here, where the config's resolvers are registered (the worker may not
    have them before it unpickles the task)."""
    return Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)


def make_slots(pin_gpus: bool, num_gpus: int | None, devices: Sequence[int] | None, gpus_per_job: int,
               slots: int) -> list[str | None]:
    """The job slots: a CUDA_VISIBLE_DEVICES value per slot (GPU mode; device ids as this process sees them),
    or ``None`` per CPU slot."""
    if not pin_gpus:
        if slots < 1:
            raise ValueError(f"hydra.launcher.slots={slots}: need at least 1")
        return [None] * slots
    if devices is None:
        if num_gpus is None:
            import torch

            num_gpus = torch.cuda.device_count()
        devices = list(range(num_gpus))
    devices = [int(d) for d in devices]
    if gpus_per_job < 1 or len(devices) < gpus_per_job:
        raise ValueError(f"launcher=gpus: {len(devices)} GPU(s) found, {gpus_per_job} needed per job; on a machine "
                         "without GPUs use launcher=cpu_parallel, or say how many there are with "
                         "hydra.launcher.num_gpus=N")
    return [",".join(map(str, devices[i:i + gpus_per_job]))
            for i in range(0, len(devices) - gpus_per_job + 1, gpus_per_job)]


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: a SLURM allocation or ``taskset``, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_jobs_per_gpu(value: Any) -> int | None:
    """``hydra.launcher.jobs_per_gpu``: a positive int, or None for ``auto``."""
    if str(value).strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(n) != str(value).strip():
        raise ValueError(f"hydra.launcher.jobs_per_gpu={value}: give a number of jobs per GPU (1, 2, ...) or auto "
                         "(as many as fit the first job's measured GPU memory)")
    return n


def jobs_per_slot(jobs_per_gpu: int, slots: int, cores: int) -> int:
    """Jobs at once per GPU slot: never more jobs in all than cores (yet one per GPU, whatever the cores)."""
    return min(jobs_per_gpu, max(1, cores // slots))


