"""The pool launcher (see the package docstring)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)
TARGET = "hydra_plugins.cvt_lab_launcher.pool.PoolLauncher"


@dataclass
class PoolLauncherConf:
    _target_: str = TARGET
    pin_gpus: bool = True  # one slot per GPU (group), CUDA_VISIBLE_DEVICES pinned; false: `slots` CPU slots
    num_gpus: int | None = None  # GPUs to use; None: torch.cuda.device_count()
    devices: list[int] | None = None  # explicit device ids (overrides num_gpus)
    gpus_per_job: int = 1
    slots: int = 2  # pin_gpus=false: jobs at once
    threads_per_job: int | None = None  # torch / OpenMP threads per job; None: leave the defaults
    poll_s: float = 0.2


ConfigStore.instance().store(group="hydra/launcher", name="cvt_lab_pool", node=PoolLauncherConf, provider="cvt_lab")


class JobCrashed(CompactHydraException):
    """A job's process died before it could report."""


def job_dir(sweep_config: DictConfig) -> Path:
    """A job's directory, resolved here, where the config's resolvers are registered (the worker may not
    have them before it unpickles the task)."""
    return Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)


def make_slots(pin_gpus: bool, num_gpus: int | None, devices: Sequence[int] | None, gpus_per_job: int,
               slots: int) -> list[str | None]:
    """The job slots: a CUDA_VISIBLE_DEVICES value per slot (GPU mode), or ``None`` per CPU slot."""
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
                         "without GPUs use launcher=cpu_parallel, or say how many there are with hydra.launcher.num_gpus=N")
    return [",".join(map(str, devices[i:i + gpus_per_job]))
            for i in range(0, len(devices) - gpus_per_job + 1, gpus_per_job)]


class PoolLauncher(Launcher):
    def __init__(self, pin_gpus: bool = True, num_gpus: int | None = None, devices: Sequence[int] | None = None,
                 gpus_per_job: int = 1, slots: int = 2, threads_per_job: int | None = None, poll_s: float = 0.2,
                 **_: Any) -> None:
        self.pin_gpus, self.num_gpus, self.gpus_per_job = pin_gpus, num_gpus, gpus_per_job
        self.devices = None if devices is None else list(devices)
        self.slots, self.threads_per_job, self.poll_s = slots, threads_per_job, poll_s
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _env(self, slot: str | None) -> dict[str, str]:
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        if self.threads_per_job:
            for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                env[key] = str(self.threads_per_job)
        return env

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import cloudpickle

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        work = sweep_dir / ".launcher"
        work.mkdir(parents=True, exist_ok=True)
        free = deque(make_slots(self.pin_gpus, self.num_gpus, self.devices, self.gpus_per_job, self.slots))
        where = "GPU slots " + ", ".join(map(str, free)) if self.pin_gpus else f"{len(free)} CPU slots"
        log.info(f"Launching {len(job_overrides)} jobs on {where}")

        pending = deque(enumerate(job_overrides, start=initial_job_idx))
        running: dict[int, tuple[subprocess.Popen, str | None, DictConfig, Path]] = {}
        returns: dict[int, JobReturn] = {}
        try:
            while pending or running:
                while pending and free:
                    idx, overrides = pending.popleft()
                    slot = free.popleft()
                    sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                    with open_dict(sweep_config):
                        sweep_config.hydra.job.id = idx
                        sweep_config.hydra.job.num = idx
                        if self.threads_per_job and "threads" in sweep_config:
                            sweep_config.threads = self.threads_per_job  # the job's own setting (cvt_lab)
                    payload, ret_path = work / f"job{idx}.pkl", work / f"job{idx}.ret.pkl"
                    ret_path.unlink(missing_ok=True)
                    with open(payload, "wb") as f:
                        cloudpickle.dump({"hydra_context": self.hydra_context, "task_function": self.task_function,
                                          "config": sweep_config, "singleton": Singleton.get_state(),
                                          "threads": self.threads_per_job, "ret_path": str(ret_path)}, f)
                    device = f" on CUDA_VISIBLE_DEVICES={slot}" if slot is not None else ""
                    log.info(f"\t#{idx}{device} : {' '.join(filter_overrides(overrides))}")
                    proc = subprocess.Popen([sys.executable, "-m", "hydra_plugins.cvt_lab_launcher.worker", str(payload)],
                                            env=self._env(slot))
                    running[idx] = (proc, slot, sweep_config, ret_path)
                done = [idx for idx, (proc, *_rest) in running.items() if proc.poll() is not None]
                for idx in done:
                    proc, slot, sweep_config, ret_path = running.pop(idx)
                    free.append(slot)
                    returns[idx] = self._collect(proc.returncode, sweep_config, ret_path)
                if not done:
                    time.sleep(self.poll_s)
        except BaseException:  # Ctrl-C (or an error here): stop the running jobs, keep the finished ones
            self._stop([proc for proc, *_rest in running.values()])
            raise
        finally:
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[i] for i in sorted(returns)]

    @staticmethod
    def _stop(procs: list[subprocess.Popen], grace_s: float = 20.0) -> None:
        for proc in procs:  # SIGINT: Lightning shuts down cleanly; the job resumes from last.ckpt next time
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.time() + grace_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()

    @staticmethod
    def _collect(returncode: int, sweep_config: DictConfig, ret_path: Path) -> JobReturn:
        import cloudpickle

        if returncode == 0 and ret_path.is_file():
            with open(ret_path, "rb") as f:
                return cloudpickle.load(f)
        # The job's process died (killed, out of memory, a crash in native code): it is failed for Hydra (the
        # sweep fails once every job ran) and in its results.json, unless it got as far as finishing.
        error = f"job process exited with code {returncode} (killed or crashed; see the sweep's log)"
        ret = JobReturn(overrides=list(OmegaConf.to_container(sweep_config.hydra.overrides.task)))
        ret.status = JobStatus.FAILED
        ret.return_value = JobCrashed(error)
        try:
            from cvt_lab.results import mark_failed

            mark_failed(job_dir(sweep_config), error, ret.overrides)
        except Exception as e:  # noqa: BLE001 - the sweep must go on
            log.warning("could not record the failure of %s: %s", ret.overrides, e)
        log.error("job %s: %s", " ".join(ret.overrides), error)
        return ret
