"""cvt_lab's Hydra launcher: a local pool of job slots, each job in its own process.

``hydra/launcher=cvt_lab_pool`` (selected by ``launcher=gpus`` and ``launcher=cpu_parallel``):

- ``pin_gpus: true``: one slot per GPU (or per ``gpus_per_job`` GPUs); every job runs with
  ``CUDA_VISIBLE_DEVICES`` set to its own device(s), the surplus waits until a device is free.
  ``num_gpus`` (default: ``torch.cuda.device_count()``) or ``devices`` say which devices there are.
- ``pin_gpus: false``: ``slots`` jobs at once on the CPU, each with ``threads_per_job`` threads.

Unlike joblib, every job gets a fresh process (no reused workers, no state leaking between jobs); unlike
submitit's local launcher, jobs are spread over devices. A job whose process dies is recorded as failed,
for Hydra and in its results.json, and the sweep goes on; Ctrl-C interrupts the running jobs and keeps
finished ones.

``hydra/sweeper=cvt_lab`` (cvt_lab's default): Hydra's basic sweeper that runs every job and then, when any
failed, ends the sweep with exit code 1 and one line naming the failed jobs.
"""

from hydra_plugins.cvt_lab_launcher.pool import PoolLauncher, PoolLauncherConf
from hydra_plugins.cvt_lab_launcher.sweeper import FailureReportingSweeper, FailureReportingSweeperConf

__all__ = ["FailureReportingSweeper", "FailureReportingSweeperConf", "PoolLauncher", "PoolLauncherConf"]
