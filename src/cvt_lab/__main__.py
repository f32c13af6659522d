"""``python -m cvt_lab`` / ``cvt-lab``: the Hydra app. Everything is built from the config by ``instantiate``.

    python -m cvt_lab                                   # cvt_tiny on digits, CPU, offline
    python -m cvt_lab model=cvt13 data=imagefolder data.root=/data/imagenet recipe=imagenet trainer=gpu
    python -m cvt_lab mode=eval checkpoint=CvT-13-224x224-IN-1k.pth model=cvt13 data=imagefolder ...
    python -m cvt_lab experiment=ablation_pos_embed -m  # a paper table as a sweep

Exit codes: 0 done (or already finished), 2 bad input (one message), 1 a crash or a sweep with failed jobs.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch  # noqa: F401  imported before Hydra configures logging, so conf/config.yaml's levels apply
from omegaconf import DictConfig

from cvt_lab.compose import VERSION_BASE, register_configs
from cvt_lab.errors import (EXIT_BAD_INPUT, EXIT_FAILED, Exit, JobError, JobFailed, RunInterrupted, as_job_error,
                            exit_code_of, message_of)
from cvt_lab.paths import config_dir
from cvt_lab.results import RunRecord
from cvt_lab.rundir import RunDir

log = logging.getLogger("cvt_lab")


def summary(record: RunRecord) -> str:
    if record.mode == "predict":
        return f"{record.model}: predictions of checkpoint {record.checkpoint}, in the run directory"

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    size = "" if record.params is None else (
        f" | {record.params / 1e6:.3f}M params, {record.macs / 1e9:.4f} GMACs at {record.image_size}")
    wall = "" if record.wall_s is None else f" | {record.epochs} epochs in {record.wall_s:.1f}s"
    if record.test_cer is not None:  # a line recognizer (cvt_lab.htr)
        return (f"{record.model} on {record.data}: test CER {pct(record.test_cer)}, WER {pct(record.test_wer)}, "
                f"val CER {pct(record.val_cer)}{size}{wall}")
    return (f"{record.model} on {record.data}: test top-1 {pct(record.test_acc1)}, top-5 {pct(record.test_acc5)}, "
            f"val top-1 {pct(record.val_acc1)}{size}{wall}")


# The record's metrics a sweeper can optimize (``objective=``): its keys that name a measured value.
METRICS = tuple(f.metadata["json"] for f in fields(RunRecord) if "json" in f.metadata)


def check_objective(objective: str | None) -> None:
    if objective is not None and objective not in METRICS:
        raise ValueError(f"objective={objective}: not a metric of the run record; valid choices are "
                         f"{', '.join(METRICS)} (or objective=null to return the whole record)")


def objective_value(record: RunRecord, objective: str | None) -> float | dict[str, Any]:
    """What the task returns: the ``objective`` metric as a float for a sweeper that optimizes it (Optuna), or
    the whole record (a dict) when no objective is set."""
    if objective is None:
        return record.to_json()
    metrics = {k: v for k, v in record.to_json().items() if k in METRICS and v is not None}
    if objective not in metrics:
        raise ValueError(f"objective={objective}: this {record.mode} run measured no {objective}; pick one it "
                         f"measures ({', '.join(metrics) or 'none'})")
    return float(metrics[objective])


def save_config_snapshot(cfg: DictConfig, run_dir: Path) -> None:
    """Hydra's ``.hydra/`` snapshot (config, hydra, overrides), written by the run once it owns its directory
    (``hydra.output_subdir`` is null): a refused rerun never overwrites the snapshot of the run that is there."""
    from hydra.core.hydra_config import HydraConfig

    RunDir(run_dir).save_config(cfg, HydraConfig.instance().cfg)


class Task:
    """The Hydra task. A job that fails records its error in results.json (status "failed"); a single run then
    exits with one message (code 2 for bad input, 1 for a crash), while in a sweep (-m) the job is marked
    failed for Hydra and the sweep goes on (cvt_lab's sweeper ends it non-zero, naming the failed jobs).

    Wall times count from the job's own start: the first job of a process from the process's start (start-up
    included), later jobs sharing the process from their own start. A job run in a process of its own (the
    pool launcher, SLURM) gets the task unpickled there, which restarts its clock and registers the resolvers."""

    def __init__(self, started: float):
        self.started = started
        self.first_job = True

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.started, self.first_job = time.time(), True
        register_configs()

    def __call__(self, cfg: DictConfig) -> float | dict[str, Any]:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from cvt_lab.job import run

        started = self.started if self.first_job else time.time()
        self.first_job = False
        hc = HydraConfig.get()
        run_dir, overrides = Path(hc.runtime.output_dir), list(hc.overrides.task)
        try:
            check_objective(cfg.objective)
            record = run(cfg, run_dir, overrides, started=started, on_start=lambda: save_config_snapshot(cfg, run_dir))
            result = objective_value(record, cfg.objective)
        except Exception as e:  # every failure is reported; see the docstring
            error = as_job_error(e)
            bad_input, message = isinstance(error, JobError), message_of(error)
            if bad_input or isinstance(error, RunInterrupted):
                log.error("error: %s", message)
            else:
                log.error("job failed", exc_info=error)
            if hc.mode == RunMode.MULTIRUN:
                raise JobFailed(message) from None
            print(f"error: {message}", file=sys.stderr)
            print(f"run directory: {run_dir}")
            raise Exit(exit_code_of(error)) from None
        print(summary(record))
        print(f"run directory: {run_dir}")
        return result


# Config choices served by an optional extra's Hydra plugin: (the module the plugin provides, the extra).
PLUGIN_EXTRAS = {"launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                 "hparams_search=": ("hydra_plugins.hydra_optuna_sweeper", "hpo")}


def missing_plugin(args: list[str]) -> str | None:
    """What the command line asks of a Hydra plugin that is not installed (Hydra's own message would only
    list the options it has), naming the extra that installs it."""
    for arg in args:
        for choice, (module, extra) in PLUGIN_EXTRAS.items():
            if arg.startswith(choice) and importlib.util.find_spec(module) is None:
                return (f"{arg} needs Hydra's plugin {module.split('.')[-1]}, which is not installed: "
                        f"pip install -e '.[{extra}]'")
    return None


def unshared_run_dir(args: list[str]) -> str | None:
    """A training started once per process by torchrun or srun (WORLD_SIZE / SLURM_NTASKS > 1) must name its run
    directory: each process would name the default one from its own clock, and the ranks would not meet there."""
    world = max(int(os.environ.get(var) or 1) for var in ("WORLD_SIZE", "SLURM_NTASKS"))
    if world <= 1 or any(a in ("-m", "--multirun") or a.startswith("hydra.run.dir=") for a in args):
        return None
    return (f"this process is one of {world} started together (torchrun or srun), and each would name its own run "
            "directory: give them one, e.g. hydra.run.dir=outputs/runs/<name> (on a filesystem every node sees; "
            "docs/cluster.md)")


def plan_requested(args: list[str]) -> bool:
    """``plan=true`` on the command line: the sweep's plan (:mod:`cvt_lab.plan`) instead of the sweep."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except HydraException:
        return False  # Hydra says what is wrong with the command line
    return any(o.key_or_group == "plan" and o.value() is True for o in overrides)


def main() -> None:
    started = time.time()  # start-up counts in the run's wall time
    if plan_requested(sys.argv[1:]):
        from cvt_lab.plan.__main__ import main as plan

        raise Exit(plan(sys.argv[1:]))
    problem = missing_plugin(sys.argv[1:]) or unshared_run_dir(sys.argv[1:])
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        raise Exit(EXIT_BAD_INPUT)
    register_configs()
    task = Task(started)
    # A bound method, not the instance: Hydra names the job (and its log file) after the function's file.
    app = hydra.main(config_path=str(config_dir()), config_name="config", version_base=VERSION_BASE)(task.__call__)
    try:
        app()
    except Exit:
        raise
    except SystemExit as e:  # Hydra refused the command line or config (it printed why): bad input
        raise SystemExit(EXIT_BAD_INPUT if e.code == EXIT_FAILED else e.code) from None


if __name__ == "__main__":
    main()
