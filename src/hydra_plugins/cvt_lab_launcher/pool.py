"""The pool launcher (see the package docstring)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict


def __getattr__(name: str):
    """The slot arithmetic and the job directory (names scripts imported from here) are cvt_lab.sweep's."""
    if name in ("available_cores", "job_dir", "jobs_per_slot", "make_slots", "parse_jobs_per_gpu"):
        return getattr(_sweep(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _sweep():
    # cvt_lab.sweep, which the plan shares, imported on use: Hydra loads this plugin in every app it starts, and
    # importing cvt_lab brings torch and timm (seconds a process, for a process that may need neither).
    import cvt_lab.sweep

    return cvt_lab.sweep


log = logging.getLogger(__name__)
TARGET = "hydra_plugins.cvt_lab_launcher.pool.PoolLauncher"


# A CUDA context's own memory (kernels, cuBLAS/cuDNN workspaces): in every job's process, not in
# torch.cuda.max_memory_reserved, so added to a job's measured peak when packing jobs onto a GPU.
CUDA_CONTEXT_BYTES = 600 * 2**20


@dataclass
class PoolLauncherConf:
    _target_: str = TARGET
    pin_gpus: bool = True  # one slot per GPU (group), CUDA_VISIBLE_DEVICES pinned; false: `slots` CPU slots
    num_gpus: int | None = None  # GPUs to use; None: torch.cuda.device_count()
    devices: list[int] | None = None  # explicit device ids (overrides num_gpus)
    gpus_per_job: int = 1
    # jobs sharing one GPU (group) at once: an int, or "auto": the first job runs alone and records its peak GPU
    # memory (results.json's peak_gpu_mem_bytes); then as many as fit each GPU's memory with memory_margin to spare
    jobs_per_gpu: Any = 1
    memory_margin: float = 0.15  # auto: the fraction of each GPU's memory left free
    gpu_memory_bytes: int | None = None  # auto: the memory of one GPU; None: torch's total_memory of the device
    slots: int = 2  # pin_gpus=false: jobs at once
    cpu_cores: int | None = None  # the cores the jobs share; None: those this process may run on
    threads_per_job: int | None = None  # torch / OpenMP threads per job; None: the cores / the jobs at once
    poll_s: float = 0.2


ConfigStore.instance().store(group="hydra/launcher", name="cvt_lab_pool", node=PoolLauncherConf, provider="cvt_lab")


class JobCrashed(CompactHydraException):
    """A job's process died before it could report."""


def visible_devices(slot: str, parent_visible: str | None) -> str:
    """A slot's CUDA_VISIBLE_DEVICES for its job: the slot's ids index this process's own visible devices,
    so ``CUDA_VISIBLE_DEVICES=4,6`` here makes slot ``1`` device ``6``."""
    if not parent_visible:
        return slot
    visible = [d.strip() for d in parent_visible.split(",") if d.strip()]
    return ",".join(visible[int(i)] if int(i) < len(visible) else i for i in slot.split(","))


def jobs_that_fit(peak_bytes: int, gpu_bytes: int, margin: float) -> int:
    """How many jobs of ``peak_bytes`` (each with its own CUDA context) fit one GPU of ``gpu_bytes`` leaving
    ``margin`` of it free; at least 1."""
    return max(1, int(gpu_bytes * (1.0 - margin)) // (int(peak_bytes) + CUDA_CONTEXT_BYTES))


def recorded_peak(run_dir: Path) -> int | None:
    """A finished job's peak GPU memory, as it recorded it in its results.json (None: not recorded)."""
    from cvt_lab.rundir import RunDir

    record = RunDir(run_dir).read_record()
    return None if record is None else record.peak_gpu_mem_bytes or None


class PoolLauncher(Launcher):
    def __init__(self, pin_gpus: bool = True, num_gpus: int | None = None, devices: Sequence[int] | None = None,
                 gpus_per_job: int = 1, jobs_per_gpu: Any = 1, memory_margin: float = 0.15,
                 gpu_memory_bytes: int | None = None, slots: int = 2, cpu_cores: int | None = None,
                 threads_per_job: int | None = None, poll_s: float = 0.2, **_: Any) -> None:
        self.pin_gpus, self.num_gpus, self.gpus_per_job = pin_gpus, num_gpus, gpus_per_job
        self.devices = None if devices is None else list(devices)
        self.jobs_per_gpu = _sweep().parse_jobs_per_gpu(jobs_per_gpu) if pin_gpus else 1  # None: auto
        if not 0.0 <= memory_margin < 1.0:
            raise ValueError(f"hydra.launcher.memory_margin={memory_margin}: give the fraction of GPU memory to leave "
                             "free, from 0 to below 1 (e.g. 0.15)")
        self.memory_margin, self.gpu_memory_bytes = memory_margin, gpu_memory_bytes
        self.cores = cpu_cores or _sweep().available_cores()
        self.slots, self.threads_per_job, self.poll_s = slots, threads_per_job, poll_s
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _threads(self, at_once: int) -> int:
        """Each job's share of the cores: torch threads, and the most loader workers it gets."""
        return self.threads_per_job or max(1, self.cores // at_once)

    def _env(self, slot: str | None, threads: int) -> dict[str, str]:
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible_devices(slot, os.environ.get("CUDA_VISIBLE_DEVICES"))
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[key] = str(threads)
        return env

    def _gpu_bytes(self, slot: str) -> int:
        if self.gpu_memory_bytes:
            return int(self.gpu_memory_bytes)
        import torch

        return min(torch.cuda.get_device_properties(int(d)).total_memory for d in slot.split(","))

    def _pack(self, groups: list[str | None], probe: DictConfig) -> int:
        """jobs_per_gpu=auto, once the first job ended: how many jobs share each GPU (group) from now on."""
        peak = recorded_peak(_sweep().job_dir(probe))
        if peak is None:
            log.warning("jobs_per_gpu=auto: the first job recorded no peak GPU memory (it failed, or ran on no GPU): "
                        "one job per GPU")
            return 1
        gpu_bytes = self._gpu_bytes(str(groups[0]))
        fit = jobs_that_fit(peak, gpu_bytes, self.memory_margin)
        per_slot = _sweep().jobs_per_slot(fit, len(groups), self.cores)
        log.info(f"jobs_per_gpu=auto: the first job peaked at {peak / 2**30:.2f} GiB of GPU memory (+ "
                 f"{CUDA_CONTEXT_BYTES / 2**30:.2f} GiB for its CUDA context); {fit} fit a GPU of "
                 f"{gpu_bytes / 2**30:.1f} GiB with {self.memory_margin:.0%} to spare; {per_slot} per GPU "
                 f"({self.cores} cores over {len(groups)} GPU slot(s))")
        return per_slot

    def _job_config(self, idx: int, overrides: Sequence[str], threads: int) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
            # the job's own settings (cvt_lab's config): torch threads, and loader workers within its share of cores
            if "threads" in sweep_config:
                sweep_config.threads = threads
            if "num_workers" in (sweep_config.get("data") or {}):
                sweep_config.data.num_workers = min(int(sweep_config.data.num_workers), threads)
        return sweep_config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import cloudpickle

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        work = sweep_dir / ".launcher"
        work.mkdir(parents=True, exist_ok=True)
        groups = _sweep().make_slots(self.pin_gpus, self.num_gpus, self.devices, self.gpus_per_job, self.slots)
        auto = self.jobs_per_gpu is None
        # jobs at once per slot: packed GPUs never run more jobs than there are cores (at least one per GPU)
        per_slot = 1 if auto else _sweep().jobs_per_slot(self.jobs_per_gpu, len(groups), self.cores)
        probe_idx = initial_job_idx if auto else None  # auto: the first job runs alone on its GPU and is measured
        load = [0] * len(groups)
        where = (f"GPU slots {', '.join(map(str, groups))}, " + ("jobs per GPU: auto" if auto else
                 f"{per_slot} job(s) per GPU") if self.pin_gpus else f"{len(groups)} CPU slots")
        log.info(f"Launching {len(job_overrides)} jobs on {where}")

        pending = deque(enumerate(job_overrides, start=initial_job_idx))
        running: dict[int, tuple[subprocess.Popen, int, DictConfig, Path]] = {}
        returns: dict[int, JobReturn] = {}
        try:
            while pending or running:
                while pending and min(load) < per_slot:  # auto: one per GPU until the first job measured itself
                    group = load.index(min(load))  # the least loaded GPU (group) first: spread, then pack
                    idx, overrides = pending.popleft()
                    threads = self._threads(per_slot * len(groups))
                    sweep_config = self._job_config(idx, overrides, threads)
                    payload, ret_path = work / f"job{idx}.pkl", work / f"job{idx}.ret.pkl"
                    ret_path.unlink(missing_ok=True)
                    with open(payload, "wb") as f:
                        cloudpickle.dump({"hydra_context": self.hydra_context, "task_function": self.task_function,
                                          "config": sweep_config, "singleton": Singleton.get_state(),
                                          "threads": threads, "ret_path": str(ret_path)}, f)
                    slot = groups[group]
                    device = f" on CUDA_VISIBLE_DEVICES={slot}" if slot is not None else ""
                    log.info(f"\t#{idx}{device} ({threads} threads) : {' '.join(filter_overrides(overrides))}")
                    worker = [sys.executable, "-m", "hydra_plugins.cvt_lab_launcher.worker", str(payload)]
                    proc = subprocess.Popen(worker, env=self._env(slot, threads))
                    load[group] += 1
                    running[idx] = (proc, group, sweep_config, ret_path)
                done = [idx for idx, (proc, *_rest) in running.items() if proc.poll() is not None]
                for idx in done:
                    proc, group, sweep_config, ret_path = running.pop(idx)
                    load[group] -= 1
                    returns[idx] = self._collect(proc.returncode, sweep_config, ret_path)
                    if idx == probe_idx:
                        per_slot, probe_idx = self._pack(groups, sweep_config), None
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
            from cvt_lab.rundir import RunDir

            RunDir(_sweep().job_dir(sweep_config)).mark_failed(error, ret.overrides)
        except Exception as e:  # noqa: BLE001 - the sweep must go on
            log.warning("could not record the failure of %s: %s", ret.overrides, e)
        log.error("job %s: %s", " ".join(ret.overrides), error)
        return ret
