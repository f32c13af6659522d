"""A paper table's report from its sweep: the paper's numbers beside ours.

    python -m cvt_lab.report outputs/sweeps/table5_cpu            # a sweep directory
    python -m cvt_lab.report ablation_pos_embed [--scale paper]   # or an experiment name (its sweep dir)

Writes ``<out>/<table>.md``, ``.csv`` and ``.png`` (``<table>_<scale>.*`` for scales other than cpu).
The jobs are grouped by their run identity (:mod:`cvt_lab.report.jobs`): a table holds only jobs that
share everything but the row and the seed, jobs that differ otherwise get a table of their own, and
duplicates are listed. Per paper row: the paper's top-1 (the table's metric: test top-1, or test CER for the
handwriting tables, lower is better, without paper numbers); ours as mean +/- std over seeds and n; the
difference from the table's reference row (an interval over seeds and test images) beside the paper's, a test
per row judged against the table's pre-registration (cvt_lab.report.claims, cvt_lab.report.prereg); params
and MACs counted at the paper's configuration beside the paper's columns; failed and missing jobs. A sweep still
in progress: its running jobs are listed apart and the report says it is incomplete. A directory that is no
sweep, or whose jobs belong to no row of the table, is refused.
Tables 3 and 4 compare models: no reference row, paper-only columns, and per scale the option that
stands in for a paper row. The paper's numbers: ``experiments/paper_tables.yaml`` (docs/paper.md).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from cvt_lab.paths import config_dir
from cvt_lab.report.analysis import analyse
from cvt_lab.report.jobs import Job
from cvt_lab.report.paper import load_paper_tables, paper_config_size
from cvt_lab.report.prereg import PREREG_DIR
from cvt_lab.report.plot import plot
from cvt_lab.report.render import csv_text, markdown
from cvt_lab.report.stats import mean_ci

__all__ = ["analyse", "experiment_sweep_dir", "load_paper_tables", "mean_ci", "paper_config_size", "report"]


def report(sweep_dir: Path, out_dir: Path, table: str | None = None, paper_tables: Path | None = None,
           metric: str | None = None, prereg_root: Path = PREREG_DIR) -> dict[str, Path]:
    """Write the report of one sweep; returns the paths written. ``metric``: the table's (``test/acc1``, or
    ``test/cer`` for a handwriting table; the registered one, by default) or its validation twin (pilots)."""
    a = analyse(Path(sweep_dir), table, paper_tables, metric, prereg_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    scale = a.meta["scale"]
    stem = a.table if scale in (None, "cpu") else f"{a.table}_{scale}"
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "png": out_dir / f"{stem}.png"}
    paths["md"].write_text(incomplete_note(a.running) + markdown(a))
    paths["csv"].write_text(csv_text(a.spec, a.sections))
    plot(a.spec, a.sections, paths["png"], scale or "?", a.metric)
    return paths


def incomplete_note(running: list[Job]) -> str:
    """The lines that open the report of a sweep still in progress: which jobs run, and that the table is
    incomplete (their rows and seeds are missing from it until they end)."""
    if not running:
        return ""
    listed = "; ".join(f"`{j.run_dir}` (row {j.row}, seed {j.seed})" for j in running)
    return (f"**Incomplete: {len(running)} job{'s' if len(running) != 1 else ''} still running**, counted in no "
            f"row yet: {listed}. Report again once the sweep has ended.\n\n")


def experiment_sweep_dir(name: str, scale: str, sweeps: Path) -> Path:
    """The sweep directory of an experiment (conf/experiment/<name>.yaml) at a scale."""
    path = config_dir() / "experiment" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml") if not p.stem.startswith("_"))
        raise ValueError(f"no experiment {name!r}; known: {', '.join(known)}")
    return Path(sweeps) / f"{OmegaConf.load(path).experiment.table}_{scale}"
