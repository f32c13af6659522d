"""The sweeper (``hydra/sweeper=cvt_lab``, cvt_lab's default): Hydra's basic sweeper, except that a failed job
never stops the sweep. Every job runs; then, if any failed, the sweep fails with one line naming each failed job
and its error, so ``make`` and CI see it (exit code 1)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf


@dataclass
class FailureReportingSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.cvt_lab_launcher.sweeper.FailureReportingSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="cvt_lab", node=FailureReportingSweeperConf,
                             provider="cvt_lab")


@functools.cache
def _sweep_failed_class() -> type[SystemExit]:
    # cvt_lab is imported when a sweep fails, not when Hydra loads this plugin: every Hydra app on this machine loads
    # it at start-up, and cvt_lab brings torch and timm (seconds a process, for a process that may need neither).
    from cvt_lab.errors import EXIT_FAILED, Exit

    class SweepFailed(Exit):
        """Some jobs of the sweep failed: the one-line summary is printed, the sweep exits 1."""

        def __init__(self, summary: str):
            print(f"error: {summary}", file=sys.stderr)
            super().__init__(EXIT_FAILED)

    SweepFailed.__module__ = __name__
    return SweepFailed


def __getattr__(name: str):
    if name == "SweepFailed":  # a cvt_lab Exit: the entry point passes its code through
        return _sweep_failed_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def failure_summary(returns: Sequence[JobReturn]) -> str | None:
    """``"2 of 5 jobs failed: [seed=1] <error>; [...] ..."``, or None when none failed."""
    failed = [r for r in returns if r.status == JobStatus.FAILED]
    if not failed:
        return None

    def line(r: JobReturn) -> str:
        error = r._return_value  # the exception (JobReturn.return_value would raise it)
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"[{' '.join(r.overrides or [])}] {text}"

    return f"{len(failed)} of {len(returns)} jobs failed: " + "; ".join(map(line, failed))


class FailureReportingSweeper(BasicSweeper):
    def job_overrides(self, arguments: Sequence[str], config_loader: ConfigLoader) -> list[list[list[str]]]:
        """The sweep's jobs as batches of override lists, in launch order: ``hydra.sweeper.params`` (the
        experiment's axes), then the command line's ``arguments``, expanded as Hydra's basic sweeper does
        (``python -m cvt_lab.plan`` lists the same jobs)."""
        parser = OverridesParser.create(config_loader=config_loader)
        return self.split_arguments(parser.parse_overrides(self._parse_config() + list(arguments)), self.max_batch_size)

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        self.overrides = self.job_overrides(arguments, self.hydra_context.config_loader)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns: list[Sequence[JobReturn]] = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            returns.append(self.launcher.launch(batch, initial_job_idx=initial_job_idx))
            initial_job_idx += len(batch)
        summary = failure_summary([r for batch in returns for r in batch])
        if summary is not None:
            raise _sweep_failed_class()(summary)
        return returns
