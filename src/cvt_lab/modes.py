"""What a job does once it owns its run directory, by ``mode``: fit and test (``train``), test a checkpoint
(``eval``), or predict image files (``predict``, :mod:`cvt_lab.predict`). Each returns what it measured as the
run record's fields (``{"test_acc1": ..., "epochs": ...}``); the job (:mod:`cvt_lab.job`) writes the record."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from cvt_lab.building import (build, build_callbacks, datamodule_from_config, image_size_of, logger_from_config,
                              model_from_config, module_from_config, trainer_from_config)
from cvt_lab.callbacks import RequeueBetweenSteps, StartupTimer
from cvt_lab.complexity import count
from cvt_lab.errors import JobError
from cvt_lab.htr.job import build_line_task, is_line_task
from cvt_lab.module import NonFiniteLossError
from cvt_lab.rundir import RunDir, checkpoint_file

log = logging.getLogger(__name__)

# The record's metric fields and the Lightning metric each comes from.
METRIC_FIELDS = {"test_acc1": "test/acc1", "test_acc5": "test/acc5", "val_acc1": "val/acc1", "val_acc5": "val/acc5",
                 "test_loss": "test/loss", "test_cer": "test/cer", "test_wer": "test/wer", "val_cer": "val/cer",
                 "val_wer": "val/wer"}


def fit_and_test(cfg: DictConfig, run_dir: Path, resume: str | None, started: float, owner: bool = True,
                 overrides: list[str] | None = None) -> dict[str, Any]:
    """Build everything from the config, fit (``mode=train``, from ``resume`` when given), validate if fitting
    did not, and test. ``owner``: this process owns the run directory (rank 0 of a distributed run). Returns the
    record's fields it measured, and ``outcomes``: per split, each item's outcomes (cvt_lab.outcomes; one process
    only)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run = RunDir(run_dir)
    image_size = image_size_of(cfg)
    if is_line_task(cfg):  # handwriting: CTC on variable-width lines (cvt_lab.htr); the data's charset sizes the head
        mixup = cfg.recipe.mixup > 0 or cfg.recipe.cutmix > 0
        data_kwargs = dict(batch_size=cfg.recipe.batch_size, image_size=image_size,
                           augment=OmegaConf.to_object(cfg.recipe.augment), drop_last=mixup, seed=cfg.seed)
        checkpoint = checkpoint_file(cfg.checkpoint) if cfg.checkpoint else None
        model, datamodule, module = build_line_task(cfg, build, data_kwargs, checkpoint)
        image_size = datamodule.height  # mode=eval: the checkpoint's
        size = count(model, image_size, in_chans=model.in_chans)  # a square line: the size at one height
    else:
        model = model_from_config(cfg)
        size = count(model, image_size, in_chans=cfg.model.in_chans)
        datamodule = datamodule_from_config(cfg)
        module = module_from_config(cfg, model)
    logger = logger_from_config(cfg, run.path, list(overrides or []), owner)
    timer = StartupTimer(started)
    callbacks = [*build_callbacks(cfg, run.checkpoint_dir), timer, RequeueBetweenSteps()]
    trainer: pl.Trainer = trainer_from_config(cfg, run, logger=logger, callbacks=callbacks)
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
        last = run.last_checkpoint
        kept = f"the last good checkpoint is kept: {last}" if last.is_file() else "no checkpoint was written yet"
        raise JobError(f"{e}; the run stopped and {kept}. Lower recipe.optimizer.lr, set "
                       "recipe.optimizer.grad_clip, or use trainer.precision=32-true, in a new run directory "
                       "(or resume= from that checkpoint on purpose)") from None
    finally:
        if cfg.logger.kind == "wandb":
            import wandb

            # a failed job shows as failed in W&B; runs sharing a process (a sweep) never merge into one W&B run
            wandb.finish(exit_code=0 if succeeded else 1)

    measured: dict[str, Any] = {field: None if metrics.get(key) is None else float(metrics[key])
                                for field, key in METRIC_FIELDS.items()}
    measured.update(params=size.params, macs=size.macs, image_size=image_size,
                    epochs=trainer.current_epoch if cfg.mode == "train" else 0, steps=trainer.global_step,
                    wall_s=round(time.time() - started, 2),
                    startup_s=None if timer.startup_s is None else round(timer.startup_s, 2),
                    threads=torch.get_num_threads())
    if torch.cuda.is_initialized():  # what jobs_per_gpu=auto packs by (the pool launcher)
        measured["peak_gpu_mem_bytes"] = torch.cuda.max_memory_reserved()
    if trainer.world_size == 1:  # one process saw every image (a distributed run's are sharded)
        # per-item outcomes: an image's top-1 correctness, a line's exact match and edits (the job writes outcomes.npz)
        measured["outcomes"] = dict(getattr(module, "outcomes", {}))
    return measured
