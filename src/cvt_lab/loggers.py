"""Experiment loggers: CSV (default), TensorBoard, Weights & Biases (offline without an API key)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

log = logging.getLogger(__name__)
KINDS = ("csv", "tensorboard", "wandb")


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def build_logger(kind: str, save_dir: str, project: str = "cvt_lab", entity: str | None = None,
                 group: str | None = None, job_type: str | None = None, name: str | None = None,
                 tags: list[str] | None = None, mode: str = "auto", run_config: dict | None = None) -> Logger:
    """A Lightning logger writing into ``save_dir`` (the run directory)."""
    if kind == "csv":
        return CSVLogger(save_dir, name="csv")  # version_N: a resumed run keeps the earlier rows
    if kind == "tensorboard":
        return TensorBoardLogger(save_dir, name="tensorboard")
    if kind != "wandb":
        raise ValueError(f"unknown logger {kind!r}; valid choices are {', '.join(KINDS)} (logger=<name>)")
    if mode == "auto":
        mode = "online" if wandb_has_credentials() else "offline"
        if mode == "offline":
            log.warning("W&B: no API key found, logging offline into %s/wandb; upload later with "
                        "`wandb sync %s/wandb/offline-run-*`", save_dir, save_dir)
    # One W&B run per run directory: a resumed run continues its W&B run instead of starting another.
    run_id = hashlib.sha1(str(Path(save_dir).resolve()).encode()).hexdigest()[:16]
    return WandbLogger(project=project, entity=entity, group=group, job_type=job_type, name=name, tags=list(tags or []),
                       save_dir=save_dir, mode=mode, id=run_id, resume="allow", config=run_config)
