"""A paper table's report on W&B (``python -m cvt_lab.report ... --wandb``): the table (the paper's numbers beside
ours, every column of the report's CSV) as a ``wandb.Table`` and its plot as an image, in one W&B run of job
type ``report`` inside the sweep's group, so the project shows each paper table beside the sweep's runs.

The W&B project, entity and group are the sweep's own: read from its jobs' configs (``logger.project``,
``logger.entity``, ``logger.group``). The report's run id is kept in ``<sweep dir>/wandb/`` (one per table), so
reporting again updates the same W&B run. Without an API key the run is written offline into the sweep
directory (``wandb sync`` uploads it). Needs the ``wandb`` extra.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cvt_lab.loggers import require_wandb, stored_run_id, wandb_mode

LOGGER_KEYS = ("project", "entity", "group")


def sweep_logger_settings(sweep_dir: Path) -> dict[str, Any]:
    """``project``, ``entity`` and ``group`` as the sweep's jobs logged to W&B (their ``.hydra/config.yaml``;
    the sweep's ``multirun.yaml`` for a sweep whose jobs wrote none)."""
    sweep_dir = Path(sweep_dir)
    jobs = sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml"))  # job dirs may nest (a/b=c)
    for path in [*(job / ".hydra" / "config.yaml" for job in jobs), sweep_dir / "multirun.yaml"]:
        if not path.is_file():
            continue
        cfg = OmegaConf.load(path)
        try:
            settings = {k: OmegaConf.select(cfg, f"logger.{k}", throw_on_resolution_failure=True) for k in LOGGER_KEYS}
        except OmegaConfBaseException:  # an interpolation only Hydra resolves (multirun.yaml): try the next
            continue
        if settings["project"]:
            return settings
    return {"project": "cvt_lab", "entity": None, "group": None}


def _cell(text: str) -> Any:
    """A CSV cell as W&B should show it: numbers as numbers, empty as missing."""
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def csv_table(path: Path) -> tuple[list[str], list[list[Any]]]:
    with Path(path).open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [[_cell(c) for c in row] for row in rows[1:]]


def log_report(paths: dict[str, Path], sweep_dir: Path, mode: str = "auto") -> str:
    """Log the report written at ``paths`` (its ``csv`` and ``png``) into the sweep's W&B group; returns where
    it went (the W&B run's path, or its offline directory)."""
    require_wandb("python -m cvt_lab.report --wandb")
    import wandb

    stem = paths["csv"].stem
    settings = sweep_logger_settings(sweep_dir)
    columns, data = csv_table(paths["csv"])
    run = wandb.init(project=settings["project"], entity=settings["entity"], group=settings["group"],
                     job_type="report", name=f"{stem} report", tags=[stem, "report"], dir=str(sweep_dir),
                     id=stored_run_id(sweep_dir, f"report_{stem}_run_id"), resume="allow",
                     mode=wandb_mode(mode, sweep_dir), config={"table": stem, "sweep": str(sweep_dir)})
    try:
        logged: dict[str, Any] = {f"{stem}/table": wandb.Table(columns=columns, data=data)}
        if paths.get("png") is not None and Path(paths["png"]).is_file():
            logged[f"{stem}/plot"] = wandb.Image(str(paths["png"]))
        run.log(logged)
        where = run.dir if run.settings.mode == "offline" else run.path
    finally:
        run.finish()
    return str(Path(where).parent) if run.settings.mode == "offline" else str(where)
