"""One job's lifecycle in its run directory: claim it, resume what is there, run the mode, record the outcome.

:func:`run` owns the run directory while it works (:meth:`cvt_lab.rundir.RunDir.lock`) and keeps it honest:
a directory holding another config's run is refused, a finished one is skipped, an unfinished one resumes from
its newest readable checkpoint. Bad input raises :class:`~cvt_lab.errors.JobError` with one message; a signal
that ends the run (SIGTERM, Ctrl-C) raises :class:`~cvt_lab.errors.RunInterrupted`; either way the record says so.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from cvt_lab.errors import JobError, RunDirTaken, RunInterrupted, as_job_error, message_of
from cvt_lab.identity import differences, file_sha256, identity_of
from cvt_lab.results import RESULTS_FILE, RunRecord, iso_time, versions
from cvt_lab.rundir import RunDir, is_readable_checkpoint

log = logging.getLogger(__name__)

MODES = ("train", "eval", "predict")


def check_inputs(cfg: DictConfig) -> None:
    """Refuse what cannot work before anything is built or written."""
    if cfg.mode not in MODES:
        raise JobError(f"unknown mode {cfg.mode!r}; valid choices are 'train', 'eval' and 'predict'")
    if cfg.mode in ("eval", "predict") and not cfg.checkpoint:
        raise JobError(f"mode={cfg.mode} needs the weights to use: add checkpoint=PATH")
    if cfg.mode == "train" and cfg.recipe.requires_checkpoint and not cfg.checkpoint:
        raise JobError(f"recipe={cfg.recipe.name} fine-tunes pre-trained weights (as experiment=transfer does): add "
                       "checkpoint=PATH (ours, a released .pth or a transformers directory)")
    if cfg.recipe.epochs < 1:
        raise JobError(f"recipe.epochs={cfg.recipe.epochs}: give at least 1 (training by steps: recipe.max_steps=N)")
    if cfg.recipe.batch_size < 1:
        raise JobError(f"recipe.batch_size={cfg.recipe.batch_size}: give at least 1")
    if cfg.threads is not None and cfg.threads < 1:
        raise JobError(f"threads={cfg.threads}: give a number of torch threads (at least 1), or threads=null for "
                       "torch's default (every core)")
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise JobError(f"trainer.accelerator={cfg.trainer.accelerator} (trainer=gpu) needs a CUDA GPU and torch finds "
                       "none here: use trainer=cpu on this machine")


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """The Lightning checkpoint to continue from: ``resume=`` (which must be readable), else the run's newest
    readable checkpoint: ``checkpoints/last.ckpt``, a step checkpoint beside it, or the ``hpc_ckpt_N.ckpt`` that
    Lightning saves in the run directory on SLURM's requeue signal (a damaged newest one: the next, with a warning)."""
    if cfg.resume:
        path = Path(cfg.resume)
        if not path.is_file():
            raise JobError(f"resume={path}: no such checkpoint; give the path of a .ckpt file (e.g. "
                           "<run dir>/checkpoints/last.ckpt) or drop resume= to start afresh")
        if not is_readable_checkpoint(path):
            raise JobError(f"resume={path}: cannot read this checkpoint (cut short, or not a Lightning .ckpt); give "
                           "another (e.g. the newest epochNNN.ckpt beside it) or drop resume= to start afresh")
        return str(path)
    path = RunDir(run_dir).newest_readable_checkpoint()
    return None if path is None else str(path)


def launched_as_rank_zero() -> bool:
    """Whether this process is the first of its training, as its launcher says before Lightning connects them:
    torchrun sets RANK, Lightning's own DDP launcher NODE_RANK and LOCAL_RANK for the processes it starts, srun
    SLURM_PROCID. Only rank 0 owns the run directory (its lock, record and config snapshot); the others train."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if "LOCAL_RANK" in env or "NODE_RANK" in env:
        return int(env.get("LOCAL_RANK", 0)) == 0 and int(env.get("NODE_RANK", 0)) == 0
    return int(env.get("SLURM_PROCID", 0)) == 0


def prereg_of(cfg: DictConfig) -> dict[str, str] | None:
    """The pre-registration the run confirms, ``{"path", "sha256"}`` (None without ``prereg=``)."""
    if not cfg.get("prereg"):
        return None
    path = Path(cfg.prereg)
    if not path.is_file():
        raise JobError(f"prereg={cfg.prereg}: no such file; name a pre-registration of experiments/prereg/ "
                       "(make tableN sets it), or drop prereg= for an exploratory run")
    return {"path": str(cfg.prereg), "sha256": file_sha256(path)}


def claim(previous: RunRecord | None, record: RunRecord, cfg: DictConfig, run_dir: Path) -> RunRecord | None:
    """Decide what to do with the run directory's earlier record: the finished record when this exact run is
    done (skip it), None to go on; :class:`RunDirTaken` when it holds another config's results or checkpoints."""
    if previous is None:
        return None
    changed = differences(previous, record)
    if changed:
        holds = previous.status != "failed" or any(RunDir(run_dir).checkpoint_dir.glob("*.ckpt"))
        if holds and not (cfg.resume and cfg.mode == previous.mode == "train"):
            also = "" if cfg.mode != previous.mode else (
                f", or continue its checkpoints with this config on purpose: resume={run_dir}/checkpoints/last.ckpt")
            raise RunDirTaken(f"{run_dir} holds a {previous.status} {previous.mode} run of another config "
                              f"({'; '.join(changed)}); its results and checkpoints belong to that config. Run in a "
                              f"new directory (drop hydra.run.dir, or another paths.output_dir for a sweep){also}")
        if holds:
            log.warning("resume=%s: continuing a run of another config (%s)", cfg.resume, "; ".join(changed))
        return None
    if previous.status == "finished" and previous.mode == cfg.mode:
        log.info("already finished: %s (delete it to run again)", Path(run_dir) / RESULTS_FILE)
        return previous
    return None


def new_record(cfg: DictConfig, run_dir: Path, overrides: Sequence[str], started: float) -> RunRecord:
    """The record of a run starting now (status "running"; no identity yet)."""
    return RunRecord(status="running", mode=cfg.mode, overrides=list(overrides), run_dir=str(run_dir),
                     started_at=iso_time(started), versions=versions(), seed=cfg.seed, model=cfg.model.name,
                     data=cfg.data.name, recipe=cfg.recipe.name, checkpoint=cfg.checkpoint,
                     precision=str(cfg.trainer.precision), experiment=OmegaConf.to_container(
                         cfg.experiment, resolve=True) if cfg.experiment is not None else None)


def run_mode(cfg: DictConfig, run_dir: Path, resume: str | None, started: float, owner: bool,
             overrides: Sequence[str]) -> dict:
    """The job's mode, run: the record's fields it measured."""
    if cfg.mode == "predict":
        from cvt_lab.htr.job import checked_line_recognizer, is_line_task
        from cvt_lab.htr.module import load_line_recognizer
        from cvt_lab.rundir import checkpoint_file

        recognizer = load_line_recognizer(checkpoint_file(cfg.checkpoint))
        if recognizer is not None or is_line_task(cfg):  # a line recognizer's checkpoint says what it holds
            from cvt_lab.htr.predict import predict_lines

            return predict_lines(cfg, run_dir, started, checked_line_recognizer(cfg, recognizer))
        from cvt_lab.predict import predict

        return predict(cfg, run_dir, started)
    from cvt_lab.modes import fit_and_test

    return fit_and_test(cfg, run_dir, resume, started, owner, list(overrides))


def run(cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = (), started: float | None = None,
        on_start: Callable[[], None] | None = None) -> RunRecord:
    """Train and test (``mode=train``), evaluate a checkpoint (``mode=eval``) or predict image files
    (``mode=predict``) in ``run_dir``; returns its record. ``on_start`` is called once the run owns the directory,
    before it starts (the config snapshot). A failure is recorded (unless the directory belongs to another run)
    and raised: bad input as :class:`JobError`, a signal as :class:`RunInterrupted`."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    started = time.time() if started is None else started
    rundir = RunDir(run_dir)
    run_dir = rundir.path
    owner = launched_as_rank_zero()  # the other ranks of a distributed run read the directory and train alone
    with rundir.lock() if owner else nullcontext():
        previous = rundir.read_record()
        record = new_record(cfg, run_dir, overrides, started)
        if previous is not None:  # until this run has an identity, a failure keeps the directory's
            record.identity, record.identity_config = previous.identity, previous.identity_config
        try:
            check_inputs(cfg)
            record.identity, record.identity_config = identity_of(cfg)
            record.prereg = prereg_of(cfg)
            done = claim(previous, record, cfg, run_dir)
            if done is not None:
                return done
            resume = resume_checkpoint(cfg, run_dir) if cfg.mode == "train" else None
            if owner and on_start is not None:
                on_start()
            if owner:
                if cfg.mode == "train":  # the requeue checkpoints but the one resumed from: they would pile up
                    rundir.prune_hpc_checkpoints(keep=resume)
                rundir.write_record(record)
            if cfg.threads:  # the job's torch threads, whatever its mode
                torch.set_num_threads(cfg.threads)
            try:
                measured = run_mode(cfg, run_dir, resume, started, owner, overrides)
            except SIGTERMException:  # Lightning stops its loops at a batch's end on SIGTERM, as a plain exit
                raise RunInterrupted("SIGTERM") from None
            except KeyboardInterrupt:
                raise RunInterrupted("SIGINT (Ctrl-C)") from None
            outcomes = measured.pop("outcomes", None)  # per-item outcomes: a file beside the record
            for name, value in measured.items():
                setattr(record, name, value)
            record.status = "finished"
            if owner:
                if outcomes:
                    rundir.write_outcomes(outcomes)
                rundir.write_record(record)
        except RunDirTaken:
            raise
        except Exception as e:
            error = as_job_error(e)
            if owner:
                record_failure(rundir, record, previous, error, started)
            if error is e:
                raise
            raise error from None
        return record


def record_failure(run_dir: RunDir | Path, record: RunRecord, previous: RunRecord | None, error: BaseException,
                   started: float) -> None:
    """Mark the run failed in its record (its checkpoints stay, so re-running resumes it); never over a
    finished record. When the record cannot be written, the reason joins the error's message."""
    if previous is not None and previous.status == "finished":
        return
    run_dir = RunDir(run_dir) if not isinstance(run_dir, RunDir) else run_dir
    record.status, record.error = "failed", message_of(error)
    record.wall_s = round(time.time() - started, 2)
    try:
        run_dir.write_record(record)
    except OSError as e:
        error.add_note(f"the failure could not be recorded in {run_dir.results_file}: {e.strerror or e}")
