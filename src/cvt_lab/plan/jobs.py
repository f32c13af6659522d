"""A sweep's jobs as Hydra would launch them: composed through Hydra's own config loader and cvt_lab's sweeper,
each job's directory as the sweep's subdir resolver names it, and what its directory already holds."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from cvt_lab.compose import hydra_session
from cvt_lab.errors import RunDirTaken
from cvt_lab.identity import identity_of
from cvt_lab.job import claim
from cvt_lab.results import RunRecord
from cvt_lab.rundir import RunDir
from cvt_lab.sweep import job_dir

# What a job's directory already holds, and what the sweep will do with it.
NEW, RESUME, FINISHED, TAKEN = "new", "resume", "finished", "taken"


@dataclass
class Job:
    index: int
    overrides: list[str]
    job_dir: Path
    config: DictConfig  # the job's composed config, resolved, as its task gets it (without the hydra node)
    status: str  # NEW, RESUME (an unfinished run of the same identity), FINISHED (skipped), TAKEN (refused)
    identity: str
    note: str = ""  # TAKEN: the keys that differ


@dataclass
class Sweep:
    config: DictConfig  # the sweep's primary config (hydra.launcher, hydra.sweep.dir, ...)
    jobs: list[Job]

    @property
    def sweep_dir(self) -> Path:
        return Path(str(self.config.hydra.sweep.dir))


def compose_sweep(overrides: Sequence[str]) -> Sweep:
    """Every job of ``python -m cvt_lab OVERRIDES -m``: the primary config composed for a multirun, the
    sweeper's expansion of ``hydra.sweeper.params`` and the command line, each job's config loaded as the
    launcher loads it, and its directory's state (through :func:`cvt_lab.job.claim`, the run's own rule)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import instantiate

    with hydra_session() as hydra:
        master = hydra.compose_config("config", list(overrides), run_mode=RunMode.MULTIRUN)
        sweeper = instantiate(master.hydra.sweeper)
        if not hasattr(sweeper, "job_overrides"):
            raise ValueError(f"hydra/sweeper={master.hydra.sweeper._target_}: the plan lists the jobs of cvt_lab's "
                             "sweeper (hydra/sweeper=cvt_lab, the default) only")
        batches = sweeper.job_overrides(list(master.hydra.overrides.task), hydra.config_loader)
        jobs = []
        for index, job_overrides in enumerate(itertools.chain.from_iterable(batches)):
            cfg = hydra.config_loader.load_sweep_config(master, list(job_overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = index
            HydraConfig.instance().set_config(cfg)  # ${hydra:...} (experiment.row) is this job's while resolving
            task = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
                    for key in cfg if key != "hydra"}  # the job's config as its task gets it
            jobs.append(_job(index, list(job_overrides), job_dir(cfg), OmegaConf.create(task)))
    return Sweep(master, jobs)


def _job(index: int, overrides: list[str], run_dir: Path, cfg: DictConfig) -> Job:
    identity, identity_config = identity_of(cfg)
    previous = RunDir(run_dir).read_record()
    status, note = NEW, ""
    try:
        mine = RunRecord(status="running", mode=cfg.mode, identity=identity, identity_config=identity_config)
        if claim(previous, mine, cfg, run_dir) is not None:
            status = FINISHED
        elif previous is not None or RunDir(run_dir).has_checkpoints():
            status = RESUME
    except RunDirTaken as e:
        status, note = TAKEN, str(e)
    if identity_config.get("checkpoint") == "missing":
        note = f"checkpoint={cfg.checkpoint} not found: the job will refuse to start"
    return Job(index, overrides, run_dir, cfg, status, identity, note)
