"""The Optuna sweeper as cvt_lab runs it (``hydra/sweeper=cvt_lab_optuna``, used by conf/hparams_search/):
hydra-optuna-sweeper's, except that failed trials end the search as cvt_lab's sweeper ends a sweep. The study
records each failed trial and goes on (``max_failure_rate: 1.0``); after the last trial, if any failed, the
sweep exits 1 with one line naming each failed trial and its error (Optuna's results are written first).

Needs the ``hpo`` extra (``pip install -e '.[hpo]'``); without it this sweeper is simply not registered and
``hparams_search=...`` says that Hydra cannot find ``cvt_lab_optuna``."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.cvt_lab_launcher import sweeper

try:
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # the hpo extra is not installed
    OptunaSweeper = None


class _RecordingLauncher:
    """The sweep's launcher, keeping every job's return (Optuna's sweeper keeps none)."""

    def __init__(self, launcher: Any, returns: list[JobReturn]):
        self.launcher, self.returns = launcher, returns

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        self.returns.extend(returns)
        return returns


if OptunaSweeper is not None:

    @dataclass
    class FailureReportingOptunaSweeperConf(OptunaSweeperConf):
        _target_: str = "hydra_plugins.cvt_lab_launcher.optuna_sweeper.FailureReportingOptunaSweeper"
        max_failure_rate: float = 1.0  # every trial runs; failures end the sweep afterwards (see the docstring)

    ConfigStore.instance().store(group="hydra/sweeper", name="cvt_lab_optuna", node=FailureReportingOptunaSweeperConf,
                                 provider="cvt_lab")

    class FailureReportingOptunaSweeper(OptunaSweeper):
        def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
            self.returns: list[JobReturn] = []
            self.sweeper.launcher = _RecordingLauncher(self.sweeper.launcher, self.returns)

        def sweep(self, arguments: list[str]) -> None:
            try:
                self.sweeper.sweep(arguments)
            except Exception:
                # Optuna raised for the failed trials (max_failure_rate exceeded, or no trial completed):
                # the failures say more than its error does
                if sweeper.failure_summary(self.returns) is None:
                    raise
            summary = sweeper.failure_summary(self.returns)
            if summary is not None:
                raise sweeper.SweepFailed(summary)
