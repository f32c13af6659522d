"""A paper table's report from its sweep: the paper's numbers beside ours.

    python -m cvt_lab.report outputs/sweeps/table5_cpu            # a sweep directory
    python -m cvt_lab.report ablation_pos_embed [--scale paper]   # or an experiment name (its sweep dir)

Writes ``<out>/<table>.md``, ``.csv`` and ``.png`` (``<table>_<scale>.*`` for scales other than cpu).
The jobs are grouped by their run identity (:mod:`cvt_lab.report.jobs`): a table holds only jobs that
share everything but the row and the seed, jobs that differ otherwise get a table of their own, and
duplicates are listed. Per paper row: the paper's top-1; ours as mean +/- std over seeds and n; the
difference from the table's reference row (Welch's unpaired t-based 95% CI, :mod:`cvt_lab.report.stats`)
beside the paper's; params and MACs counted at the paper's configuration beside the paper's columns; failed
and missing jobs. A sweep still in progress: its running jobs are listed apart and the report says it is
incomplete. A directory that is no sweep, or whose jobs belong to no row of the table, is refused.
Tables 3 and 4 compare models: no reference row, paper-only columns, and per scale the option that
stands in for a paper row. The paper's numbers: ``experiments/paper_tables.yaml`` (docs/paper.md).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from cvt_lab.paths import config_dir
from cvt_lab.results import RESULTS_FILE
from cvt_lab.report.jobs import Job, Setting, read_jobs, settings, sweep_meta
from cvt_lab.report.paper import PAPER_TABLES, load_paper_tables, paper_config_size
from cvt_lab.report.render import Section, csv_text, markdown, plot
from cvt_lab.report.rows import build_rows, empty_rows
from cvt_lab.report.stats import mean_ci

__all__ = ["experiment_sweep_dir", "load_paper_tables", "mean_ci", "paper_config_size", "report"]


def report(sweep_dir: Path, out_dir: Path, table: str | None = None,
           paper_tables: Path | None = None) -> dict[str, Path]:
    """Write the report of one sweep; returns the paths written."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep directory {sweep_dir}; run the sweep first (make sweep EXP=...)")
    tables = load_paper_tables(paper_tables)
    meta = sweep_meta(sweep_dir)
    table = table or meta["table"] or sweep_dir.name.split("_")[0]
    if table not in tables or "experiment" not in tables[table]:
        known = [t for t, spec in tables.items() if "experiment" in spec]
        raise ValueError(f"no swept paper table {table!r} in {PAPER_TABLES}; known: {', '.join(known)}")
    spec = tables[table]
    meta["scale"] = meta["scale"] or (sweep_dir.name.split("_", 1)[1] if "_" in sweep_dir.name else None)
    jobs = read_jobs(sweep_dir, spec["axis"], spec.get("row_format"))
    if not jobs:
        raise ValueError(f"{sweep_dir} is not a sweep: no job under it has a run record ({RESULTS_FILE}); give the "
                         "directory a sweep wrote (hydra.sweep.dir, e.g. outputs/sweeps/table5_cpu)")
    runs = {r.ran_as for r in empty_rows(spec, meta["scale"])}
    if not any(j.row in runs for j in jobs):
        found = sorted({str(j.row) for j in jobs})
        raise ValueError(f"none of the {len(jobs)} jobs under {sweep_dir} belongs to a row of {table} (its rows: "
                         f"{', '.join(sorted(map(str, runs)))}; the jobs' rows: {', '.join(found)}): pick the table "
                         "they ran with --table, or the sweep of this table")
    # Jobs still running are neither results nor failures yet: they are listed apart, and the table is incomplete.
    running = [j for j in jobs if j.running]
    in_table = [j for j in jobs if j.row in runs and not j.running]
    groups = settings(in_table, spec["row_keys"]) or [Setting([], [])]
    sections = [Section(s, *build_rows(spec, s, meta["scale"])) for s in groups]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = table if meta["scale"] in (None, "cpu") else f"{table}_{meta['scale']}"
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "png": out_dir / f"{stem}.png"}
    other = [j for j in jobs if j.row not in runs and not j.running]
    paths["md"].write_text(incomplete_note(running) + markdown(table, spec, sections, meta, sweep_dir, other))
    paths["csv"].write_text(csv_text(spec, sections))
    plot(spec, sections, paths["png"], meta["scale"] or "?")
    return paths


def incomplete_note(running: list[Job]) -> str:
    """The lines that open the report of a sweep still in progress: which jobs run, and that the table is
    incomplete (their rows and seeds are missing from it until they end)."""
    if not running:
        return ""
    listed = "; ".join(f"`{j.run_dir}` (row {j.row}, seed {j.seed})" for j in running)
    return (f"**Incomplete: {len(running)} job{'s' if len(running) != 1 else ''} still running**, not counted "
            f"below: {listed}. Report again once the sweep has ended.\n\n")


def experiment_sweep_dir(name: str, scale: str, sweeps: Path) -> Path:
    """The sweep directory of an experiment (conf/experiment/<name>.yaml) at a scale."""
    path = config_dir() / "experiment" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml") if not p.stem.startswith("_"))
        raise ValueError(f"no experiment {name!r}; known: {', '.join(known)}")
    return Path(sweeps) / f"{OmegaConf.load(path).experiment.table}_{scale}"
