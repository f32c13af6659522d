"""One job: train (or evaluate) a model from a composed config and write ``results.json`` into the run dir."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from cvt_lab.complexity import count
from cvt_lab.module import ImageClassifier, NonFiniteLossError

log = logging.getLogger(__name__)
RESULTS = "results.json"


class JobError(RuntimeError):
    """Bad input to a job (config, data, checkpoint): one message naming the problem and the fix."""


# Errors that mean bad input (config, data path, checkpoint) rather than a bug: reported as one message.
BAD_INPUT: tuple[type[BaseException], ...] = (JobError, ValueError, FileNotFoundError, KeyError)


class StartupTimer(Callback):
    """Records when the first training batch starts, for the start-up figure in results.json."""

    def __init__(self, started: float):
        self.started = started
        self.startup_s: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.startup_s is None:
            self.startup_s = time.time() - self.started


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a job killed mid-write never leaves a truncated results file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_results(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / RESULTS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def record_failure(run_dir: Path, overrides: list[str], error: BaseException) -> dict:
    """Mark a job failed in its results.json; its checkpoints stay, so re-running resumes it."""
    message = str(error) or type(error).__name__
    if not isinstance(error, BAD_INPUT):
        message = f"{type(error).__name__}: {message}"
    results = {"status": "failed", "error": message, "overrides": list(overrides), "run_dir": str(run_dir)}
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(run_dir) / RESULTS, results)
    return results


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def run(cfg: DictConfig, run_dir: Path, overrides: list[str], started: float | None = None) -> dict[str, Any]:
    """Train and test (``mode=train``) or evaluate a checkpoint (``mode=eval``); returns the results."""
    started = started or time.time()
    run_dir = Path(run_dir)
    if cfg.mode not in ("train", "eval"):
        raise JobError(f"unknown mode {cfg.mode!r}; valid choices are 'train' and 'eval'")
    if cfg.mode == "eval" and not cfg.checkpoint:
        raise JobError("mode=eval needs the weights to evaluate: add checkpoint=PATH")
    previous = read_results(run_dir)
    if cfg.mode == "train" and previous and previous.get("status") == "finished" and previous.get("mode") == "train":
        log.info("already finished: %s (delete it to run again)", run_dir / RESULTS)
        return previous

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    image_size = cfg.recipe.image_size or cfg.model.img_size
    model = instantiate(cfg.model)
    if cfg.checkpoint:
        from cvt_lab.checkpoint import load_checkpoint

        loaded = load_checkpoint(getattr(model, "_orig_mod", model), cfg.checkpoint)
        if cfg.mode == "eval" and loaded.head_replaced:
            raise JobError(f"checkpoint={cfg.checkpoint} was trained for another number of classes than "
                           f"data={cfg.data.name} ({cfg.data.num_classes}); evaluating it needs its own head: "
                           "pick the matching data (or data.num_classes), or fine-tune it with mode=train")
    size = count(model, image_size, in_chans=cfg.model.in_chans)
    mixup = cfg.recipe.mixup > 0 or cfg.recipe.cutmix > 0
    datamodule = instantiate(cfg.data, batch_size=cfg.recipe.batch_size, image_size=image_size,
                             augment=OmegaConf.to_object(cfg.recipe.augment), drop_last=mixup, seed=cfg.seed)
    recipe = OmegaConf.to_object(cfg.recipe)
    module = ImageClassifier(model, recipe, num_classes=cfg.data.num_classes)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = instantiate(cfg.logger, _recursive_=False, _convert_="all", save_dir=str(run_dir), name=cfg.logger.name or ",".join(overrides) or "default",
                         run_config=resolved)
    if cfg.logger.kind != "wandb":
        logger.log_hyperparams(resolved)
    ckpt_dir = run_dir / "checkpoints"
    timer = StartupTimer(started)
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                                 save_last=True, save_top_k=1, every_n_epochs=1), timer]
    trainer: pl.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir), logger=logger, callbacks=callbacks)

    resume = cfg.resume or (str(ckpt_dir / "last.ckpt") if (ckpt_dir / "last.ckpt").is_file() else None)
    if resume and not Path(resume).is_file():
        raise JobError(f"resume={resume}: no such checkpoint; give the path of a .ckpt file (e.g. "
                       f"<run dir>/checkpoints/last.ckpt) or drop resume= to start afresh")
    try:
        if cfg.mode == "train":
            if resume:
                log.info("resuming from %s", resume)
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        metrics = dict(trainer.callback_metrics)
        if "val/acc1" not in metrics:
            trainer.validate(module, datamodule=datamodule, verbose=False)
            metrics = dict(trainer.callback_metrics)
        trainer.test(module, datamodule=datamodule, verbose=False)
        metrics.update(trainer.callback_metrics)
    except NonFiniteLossError as e:
        last = ckpt_dir / "last.ckpt"
        kept = f"the last good checkpoint is kept: {last}" if last.is_file() else "no checkpoint was written yet"
        raise JobError(f"{e}; the run stopped and {kept}. Lower recipe.optimizer.lr, set "
                       "recipe.optimizer.grad_clip, or use trainer.precision=32-true") from None
    finally:
        if cfg.logger.kind == "wandb":
            import wandb

            wandb.finish()  # runs sharing a process (a sweep) must never merge into one W&B run

    results = {
        "status": "finished",
        "mode": cfg.mode,
        "test/acc1": _metric(metrics, "test/acc1"),
        "test/acc5": _metric(metrics, "test/acc5"),
        "val/acc1": _metric(metrics, "val/acc1"),
        "val/acc5": _metric(metrics, "val/acc5"),
        "test/loss": _metric(metrics, "test/loss"),
        "params": size.params,
        "macs": size.macs,
        "image_size": image_size,
        "epochs": trainer.current_epoch if cfg.mode == "train" else 0,
        "steps": trainer.global_step,
        "wall_s": round(time.time() - started, 2),
        "startup_s": None if timer.startup_s is None else round(timer.startup_s, 2),
        "seed": cfg.seed,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "recipe": cfg.recipe.name,
        "precision": str(cfg.trainer.precision),
        "threads": torch.get_num_threads(),
        "checkpoint": cfg.checkpoint,
        "experiment": OmegaConf.to_container(cfg.experiment, resolve=True) if cfg.experiment is not None else None,
        "overrides": list(overrides),
        "run_dir": str(run_dir),
        "torch": torch.__version__,
    }
    write_json(run_dir / RESULTS, results)
    return results
