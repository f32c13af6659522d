"""One job: train (or evaluate) a model from a composed config; its record is the run dir's results.json.

:func:`run` owns the run directory while it works (:func:`cvt_lab.results.run_lock`) and keeps it honest:
a directory holding another config's run is refused, a finished one is skipped, an unfinished one resumes
from its newest readable checkpoint. Bad input raises :class:`JobError` with one message.
"""

from __future__ import annotations

import logging
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from urllib.error import URLError

import lightning.pytorch as pl
import torch
from hydra.errors import CompactHydraException, InstantiationException
from hydra.utils import get_class, instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from cvt_lab.callbacks import RequeueBetweenSteps, StartupTimer
from cvt_lab.complexity import count
from cvt_lab.config import trainer_args_set
from cvt_lab.htr.job import build_line_task, is_line_task
from cvt_lab.module import ImageClassifier, NonFiniteLossError
from cvt_lab.results import (RESULTS_FILE, RunDirError, RunRecord, differences, file_sha256, identity_of, iso_time,
                             read_record, run_lock, versions, write_outcomes, write_record)

log = logging.getLogger(__name__)


class JobError(RuntimeError):
    """Bad input to a job (config, data, checkpoint, run directory): one message naming the problem and the fix."""


class RunDirTaken(JobError):
    """The run directory holds another config's run: it is left untouched."""


class JobFailed(CompactHydraException):
    """A job of a sweep failed (its record holds the error); Hydra marks the job failed and the sweep goes on."""


# Errors that mean bad input (config, data path, checkpoint) rather than a bug: reported as one message.
BAD_INPUT: tuple[type[BaseException], ...] = (JobError, RunDirError, ValueError, FileNotFoundError, KeyError,
                                              MisconfigurationException)


def as_job_error(error: BaseException) -> BaseException:
    """The error to report: the one ``hydra.utils.instantiate`` wrapped, bad input as one :class:`JobError`."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, URLError):  # the only network access is torchvision's download
        return JobError(f"cannot download the dataset ({error.reason}): data.download=true needs the network; "
                        "put a local copy under data.root and set data.download=false")
    if isinstance(error, BAD_INPUT) and not isinstance(error, JobError):
        return JobError(str(error) or type(error).__name__)
    return error


def message_of(error: BaseException) -> str:
    """One line for an error: a bad input's message, or a crash's type and message; notes appended."""
    text = str(error) or type(error).__name__
    if not isinstance(error, JobError):
        text = f"{type(error).__name__}: {text}"
    return "; ".join([text, *getattr(error, "__notes__", [])])


def build(node: DictConfig, group: str, **kwargs: Any) -> Any:
    """``instantiate(node)``; a bad-input error raised while building comes out as one message naming the group."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        error = as_job_error(e)
        raise (JobError(f"{group}: {error}") if isinstance(error, JobError) else error) from None


def build_callbacks(cfg: DictConfig, ckpt_dir: Path) -> list[Callback]:
    """The ``callbacks`` group's entries (those not null), each by ``instantiate``; ModelCheckpoints write into
    ``ckpt_dir``, where the run resumes from."""
    callbacks = []
    for name, node in cfg.callbacks.items():
        if node is None:
            continue
        group = f"callbacks.{name}"
        try:
            target = get_class(node._target_)
        except (ImportError, ValueError) as e:
            raise JobError(f"{group}: _target_={node._target_!r} is not a class that can be imported ({e})") from None
        kwargs = {"dirpath": str(ckpt_dir)} if issubclass(target, ModelCheckpoint) else {}
        try:
            callbacks.append(build(node, group, **kwargs))
        except TypeError as e:  # an argument the callback does not take
            raise JobError(f"{group}: {e}; see {node._target_}'s arguments") from None
    return callbacks


def trainer_node(cfg: DictConfig) -> DictConfig:
    """``cfg.trainer`` without the arguments left at Lightning's defaults: those stay unset, so Lightning's
    ``PL_TRAINER_*`` environment variables can still supply them."""
    return OmegaConf.create(trainer_args_set(OmegaConf.to_container(cfg.trainer, resolve=True)))


def check_inputs(cfg: DictConfig) -> None:
    """Refuse what cannot work before anything is built or written."""
    if cfg.mode not in ("train", "eval", "predict"):
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


def is_readable_checkpoint(path: Path) -> bool:
    """A complete checkpoint file: torch.save writes a zip archive, whose directory and checksums a file cut
    short (a kill while it was written) fails."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


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
    # Newest first; last.ckpt first among those written together (it is written after its epoch's checkpoint).
    found = sorted([*(run_dir / "checkpoints").glob("*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")],
                   key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt"), reverse=True)
    for path in found:
        if is_readable_checkpoint(path):
            if path != found[0]:
                log.warning("%s cannot be read (cut short?); resuming from %s instead", found[0], path)
            return str(path)
    if found:
        raise JobError(f"no readable checkpoint in {run_dir} ({', '.join(p.name for p in found)} are damaged): delete "
                       "them to start this run afresh, or continue from another with resume=PATH")
    return None


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
        holds = previous.status != "failed" or any((run_dir / "checkpoints").glob("*.ckpt"))
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
        log.info("already finished: %s (delete it to run again)", run_dir / RESULTS_FILE)
        return previous
    return None


def run(cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = (), started: float | None = None,
        on_start: Callable[[], None] | None = None) -> RunRecord:
    """Train and test (``mode=train``) or evaluate a checkpoint (``mode=eval``) in ``run_dir``; returns its
    record. ``on_start`` is called once the run owns the directory, before it starts (the config snapshot).
    A failure is recorded (unless the directory belongs to another run) and raised: bad input as :class:`JobError`."""
    started = time.time() if started is None else started
    run_dir = Path(run_dir)
    owner = launched_as_rank_zero()  # the other ranks of a distributed run read the directory and train alone
    with run_lock(run_dir) if owner else nullcontext():
        previous = read_record(run_dir)
        record = RunRecord(status="running", mode=cfg.mode, overrides=list(overrides), run_dir=str(run_dir),
                           started_at=iso_time(started), versions=versions(), seed=cfg.seed, model=cfg.model.name,
                           data=cfg.data.name, recipe=cfg.recipe.name, checkpoint=cfg.checkpoint,
                           precision=str(cfg.trainer.precision), experiment=OmegaConf.to_container(
                               cfg.experiment, resolve=True) if cfg.experiment is not None else None)
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
                write_record(run_dir, record)
            if cfg.threads:  # the job's torch threads, whatever its mode
                torch.set_num_threads(cfg.threads)
            if cfg.mode == "predict":
                from cvt_lab.predict import predict

                predict(cfg, run_dir, record, started)
            else:
                train(cfg, run_dir, record, resume, started, owner)
            if owner:
                write_record(run_dir, record)
        except RunDirTaken:
            raise
        except Exception as e:
            error = as_job_error(e)
            if owner:
                record_failure(run_dir, record, previous, error, started)
            if error is e:
                raise
            raise error from None
        return record


def record_failure(run_dir: Path, record: RunRecord, previous: RunRecord | None, error: BaseException,
                   started: float) -> None:
    """Mark the run failed in its record (its checkpoints stay, so re-running resumes it); never over a
    finished record. When the record cannot be written, the reason joins the error's message."""
    if previous is not None and previous.status == "finished":
        return
    record.status, record.error = "failed", message_of(error)
    record.wall_s = round(time.time() - started, 2)
    try:
        write_record(run_dir, record)
    except OSError as e:
        error.add_note(f"the failure could not be recorded in {run_dir / RESULTS_FILE}: {e.strerror or e}")


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def train(cfg: DictConfig, run_dir: Path, record: RunRecord, resume: str | None, started: float,
          owner: bool = True) -> None:
    """Build everything from the config, fit (train mode) and test; fills ``record`` in. ``owner``: this process
    owns the run directory (rank 0 of a distributed run)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    image_size = cfg.recipe.image_size or cfg.model.img_size
    mixup = cfg.recipe.mixup > 0 or cfg.recipe.cutmix > 0
    data_kwargs = dict(batch_size=cfg.recipe.batch_size, image_size=image_size,
                       augment=OmegaConf.to_object(cfg.recipe.augment), drop_last=mixup, seed=cfg.seed)
    if is_line_task(cfg):  # handwriting: CTC on variable-width lines (cvt_lab.htr)
        model, datamodule, module = build_line_task(cfg, build, data_kwargs)
        size = count(model, image_size, in_chans=cfg.model.in_chans)  # a square line: the size at one height
    else:
        model = build(cfg.model, "model")
        if cfg.checkpoint:
            from cvt_lab.checkpoint import load_checkpoint

            loaded = load_checkpoint(model, cfg.checkpoint)
            if cfg.mode == "eval" and loaded.head_replaced:
                raise JobError(f"checkpoint={cfg.checkpoint} was trained for another number of classes than "
                               f"data={cfg.data.name} ({cfg.data.num_classes}); evaluating it needs its own head: "
                               "pick the matching data (or data.num_classes), or fine-tune it with mode=train")
        size = count(model, image_size, in_chans=cfg.model.in_chans)
        datamodule = build(cfg.data, "data", **data_kwargs)
        module = ImageClassifier(model, OmegaConf.to_object(cfg.recipe), num_classes=cfg.data.num_classes,
                                 model_config=OmegaConf.to_container(cfg.model, resolve=True))

    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = build(cfg.logger, "logger", _recursive_=False, _convert_="all", save_dir=str(run_dir),
                   name=cfg.logger.name or ",".join(record.overrides) or "default", run_config=resolved,
                   owns_run_dir=owner)
    if cfg.logger.kind != "wandb":
        logger.log_hyperparams(resolved)
    ckpt_dir = run_dir / "checkpoints"
    timer = StartupTimer(started)
    callbacks = [*build_callbacks(cfg, ckpt_dir), timer, RequeueBetweenSteps()]
    trainer: pl.Trainer = build(trainer_node(cfg), "trainer", default_root_dir=str(run_dir), logger=logger,
                                callbacks=callbacks)
    succeeded = False
    try:
        if cfg.mode == "train":
            if resume:
                log.info("resuming from %s", resume)
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        metrics = dict(trainer.callback_metrics)
        if "val/acc1" not in metrics and "val/cer" not in metrics:
            trainer.validate(module, datamodule=datamodule, verbose=False)
            metrics = dict(trainer.callback_metrics)
        trainer.test(module, datamodule=datamodule, verbose=False)
        metrics.update(trainer.callback_metrics)
        succeeded = True
    except NonFiniteLossError as e:
        last = ckpt_dir / "last.ckpt"
        kept = f"the last good checkpoint is kept: {last}" if last.is_file() else "no checkpoint was written yet"
        raise JobError(f"{e}; the run stopped and {kept}. Lower recipe.optimizer.lr, set "
                       "recipe.optimizer.grad_clip, or use trainer.precision=32-true, in a new run directory "
                       "(or resume= from that checkpoint on purpose)") from None
    finally:
        if cfg.logger.kind == "wandb":
            import wandb

            # a failed job shows as failed in W&B; runs sharing a process (a sweep) never merge into one W&B run
            wandb.finish(exit_code=0 if succeeded else 1)

    record.status = "finished"
    record.test_acc1, record.test_acc5 = _metric(metrics, "test/acc1"), _metric(metrics, "test/acc5")
    record.val_acc1, record.val_acc5 = _metric(metrics, "val/acc1"), _metric(metrics, "val/acc5")
    record.test_loss = _metric(metrics, "test/loss")
    record.test_cer, record.test_wer = _metric(metrics, "test/cer"), _metric(metrics, "test/wer")
    record.val_cer, record.val_wer = _metric(metrics, "val/cer"), _metric(metrics, "val/wer")
    record.params, record.macs, record.image_size = size.params, size.macs, image_size
    record.epochs = trainer.current_epoch if cfg.mode == "train" else 0
    record.steps = trainer.global_step
    record.wall_s = round(time.time() - started, 2)
    record.startup_s = None if timer.startup_s is None else round(timer.startup_s, 2)
    record.threads = torch.get_num_threads()
    if owner and trainer.world_size == 1:  # one process saw every image (a distributed run's are sharded)
        write_outcomes(run_dir, module.outcomes)
    if torch.cuda.is_initialized():  # what jobs_per_gpu=auto packs by (the pool launcher)
        record.peak_gpu_mem_bytes = torch.cuda.max_memory_reserved()
