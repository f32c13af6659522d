"""Experiment loggers: CSV (default), TensorBoard, Weights & Biases (offline without an API key; the wandb extra)."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import secrets
import string
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

log = logging.getLogger(__name__)
KINDS = ("csv", "tensorboard", "wandb")
RUN_ID_FILE = "run_id"  # in <run dir>/wandb/: the W&B run id of the run directory
WANDB_RUN_DIR = re.compile(r"(?:offline-)?run-(\d{8}_\d{6})-(\w+)")  # what W&B names a run's local directory


def require_wandb(what: str = "logger=wandb") -> None:
    """wandb is an optional dependency (the ``wandb`` extra): one message naming it when it is missing."""
    if importlib.util.find_spec("wandb") is None:
        raise ValueError(f"{what} needs Weights & Biases, which is not installed: pip install -e '.[wandb]' "
                         "(or pip install wandb), or use logger=csv / logger=tensorboard")


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_mode(mode: str, save_dir: str | Path) -> str:
    """``auto``: online with an API key, else offline into ``save_dir/wandb`` (saying how to upload it later)."""
    if mode != "auto":
        return mode
    if wandb_has_credentials():
        return "online"
    log.warning("W&B: no API key found, logging offline into %s/wandb; upload later with "
                "`wandb sync %s/wandb/offline-run-*`", save_dir, save_dir)
    return "offline"


def stored_run_id(save_dir: str | Path, file: str = RUN_ID_FILE, given: str | None = None) -> str:
    """The W&B run id of a directory: generated once, kept in ``save_dir/wandb/<file>``, so a resumed run
    continues its W&B run and runs on other machines never share an id. ``given`` (a W&B sweep agent's
    ``WANDB_RUN_ID``) is the id and is kept. A directory W&B wrote into before the id was kept (older cvt_lab)
    keeps the id of its newest W&B run."""
    wandb_dir = Path(save_dir) / "wandb"
    path = wandb_dir / file
    if not given and path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    earlier = sorted(m.groups() for p in wandb_dir.glob("*run-*") if (m := WANDB_RUN_DIR.fullmatch(p.name)))
    run_id = given or (earlier[-1][1] if earlier and file == RUN_ID_FILE else "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8)))
    wandb_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def build_logger(kind: str, save_dir: str, project: str = "cvt_lab", entity: str | None = None,
                 group: str | None = None, job_type: str | None = None, name: str | None = None,
                 tags: list[str] | None = None, mode: str = "auto", log_model: Any = False,
                 run_config: dict | None = None, owns_run_dir: bool = True) -> Logger:
    """A Lightning logger writing into ``save_dir`` (the run directory). W&B: ``log_model`` uploads the
    checkpoints as artifacts (True: at the end of training; "all": each one as it is saved). Only the process
    that owns the run directory (rank 0) keeps the W&B run id: the other ranks of a distributed run log nothing."""
    if kind == "csv":
        return CSVLogger(save_dir, name="csv")  # version_N: a resumed run keeps the earlier rows
    if kind == "tensorboard":
        return TensorBoardLogger(save_dir, name="tensorboard")
    if kind != "wandb":
        raise ValueError(f"unknown logger {kind!r}; valid choices are {', '.join(KINDS)} (logger=<name>)")
    require_wandb()
    if log_model not in (True, False, "all"):
        raise ValueError(f"logger.log_model={log_model!r}: give true (checkpoints at the end), all (each "
                         "checkpoint as it is saved) or false")
    return WandbLogger(project=project, entity=entity, group=group, job_type=job_type, name=name, tags=list(tags or []),
                       save_dir=save_dir, mode=wandb_mode(mode, save_dir),
                       id=stored_run_id(save_dir, given=os.environ.get("WANDB_RUN_ID")) if owns_run_dir else None,
                       resume="allow", log_model=log_model, config=run_config)
