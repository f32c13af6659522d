"""A paper table's report from its sweep: the paper's numbers beside ours.

    python -m cvt_lab.report outputs/sweeps/table5_cpu            # a sweep directory
    python -m cvt_lab.report ablation_pos_embed [--scale paper]   # or an experiment name (its sweep dir)

Writes ``<out>/<table>.md``, ``.csv`` and ``.png`` (``<table>_<scale>.*`` for scales other than cpu):
every paper row with the paper's top-1; ours as mean +/- std over seeds and n; the difference from the
table's reference row (paired by seed, t-based 95% confidence interval) beside the paper's; params and
MACs counted at the paper's configuration (CvT-13 or DeiT-S at 224 with the row's option) beside the
paper's columns; and which jobs failed (with their error) or are missing. The paper's numbers live in
``experiments/paper_tables.yaml``.

Tables 3 (ImageNet-1k: model x image size) and 4 (transfer: model x dataset) compare models, not options:
no reference row and no differences; params / MACs at each row's own model and size (``preset``, ``size``);
paper-only columns (Table 3's ReaL and V2); and, per scale, which option stands in for a paper row
(cvt_tiny@32 for cvt13@224 at CPU scale), rows of that scale alone (Table 4's digits pipeline check), rows
that scale does not run, and a note said plainly in the report's header.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cvt_lab.paths import config_dir

PAPER_TABLES = "paper_tables.yaml"


def paper_tables_path() -> Path:
    """``experiments/paper_tables.yaml`` beside ``conf/`` (source checkout)."""
    return config_dir().parent / "experiments" / PAPER_TABLES


def load_paper_tables(path: Path | None = None) -> dict[str, dict]:
    return OmegaConf.to_container(OmegaConf.load(path or paper_tables_path()), resolve=True)


def t_quantile(df: int, q: float = 0.975) -> float:
    try:
        from scipy.stats import t

        return float(t.ppf(q, df))
    except ImportError:  # two-sided 95% values
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
        return table.get(df, 1.96 + 2.5 / df)


def mean_ci(values: list[float]) -> tuple[float, float | None, float | None]:
    """Mean and the half-width of its t-based 95% CI, and the std (None with fewer than two values)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None, None
    sd = statistics.stdev(values)
    return m, t_quantile(len(values) - 1) * sd / math.sqrt(len(values)), sd


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Job:
    row: str | None
    seed: int | None
    status: str
    acc1: float | None = None  # test top-1 in %
    error: str | None = None
    params: int | None = None
    macs: int | None = None
    run_dir: str = ""
    model: str | None = None


def _override(overrides: list[str], key: str) -> str | None:
    for o in overrides:
        k, sep, v = o.lstrip("+~").partition("=")
        if sep and k == key:
            return v
    return None


_ROW_FIELDS = {"model": "model", "image_size": "recipe.image_size", "data": "data"}


def _row_from_fields(r: dict, overrides: list[str], row_format: str) -> str | None:
    """A row name like ``cvt13@224`` from results.json's fields (or, for a failed job, its overrides)."""
    values = {}
    for name, key in _ROW_FIELDS.items():
        v = r.get(name)
        values[name] = v if v is not None else _override(overrides, key)
    try:
        row = row_format.format(**values)
    except (KeyError, IndexError, ValueError):
        return None
    return None if "None" in row else row


def read_jobs(sweep_dir: Path, axis: str, row_format: str | None = None) -> list[Job]:
    """Every job under the sweep directory (``results.json`` files, at any depth: job directories named
    from a ``model/<group>=...`` override are nested one level). A job's row is ``experiment.row`` where
    results.json stores it resolved; else, for a table whose rows combine fields (``row_format``, e.g.
    ``{model}@{image_size}``), it is made from results.json's fields; else it is the axis override (older
    results.json stored the unresolved ``${hydra:...}`` interpolation)."""
    jobs = []
    for path in sorted(Path(sweep_dir).rglob("results.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            jobs.append(Job(None, None, "failed", error=f"unreadable results.json: {e}", run_dir=str(path.parent)))
            continue
        overrides = r.get("overrides") or []
        exp_row = (r.get("experiment") or {}).get("row")
        if isinstance(exp_row, str) and "${" not in exp_row:
            row = exp_row
        elif row_format:
            row = _row_from_fields(r, overrides, row_format)
        else:
            row = _override(overrides, axis)
        seed = r.get("seed")
        if seed is None and _override(overrides, "seed") is not None:
            seed = int(_override(overrides, "seed"))
        acc = r.get("test/acc1")
        jobs.append(Job(row, seed, r.get("status", "unknown"), None if acc is None else 100 * acc, r.get("error"),
                        r.get("params"), r.get("macs"), str(path.parent), r.get("model")))
    return jobs


def sweep_meta(sweep_dir: Path) -> dict[str, Any]:
    """Table, scale, seeds and the command line, from the sweep's multirun.yaml (written by Hydra)."""
    meta: dict[str, Any] = {"table": None, "scale": None, "seeds": None, "command": None}
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return meta
    cfg = OmegaConf.load(path)
    exp = cfg.get("experiment") or {}
    meta["table"] = exp.get("table")
    scale = cfg.get("scale") or {}
    meta["scale"] = scale.get("name")
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    task = list(OmegaConf.select(cfg, "hydra.overrides.task") or [])
    seeds = _override(task, "seed") or params.get("seed")
    if seeds is not None:
        meta["seeds"] = [int(s) for s in str(seeds).split(",") if s.strip()]
    meta["command"] = " ".join(["python -m cvt_lab", *task, "-m"])
    return meta


# ---------------------------------------------------------------------------------------------- complexity


def _count_preset(name: str, size: int, **overrides):
    """``count_preset`` of the model's full computation: inference shortcuts of the model (e.g. a last block
    that computes the class token only) would otherwise lower the MACs below the paper's definition."""
    from contextlib import nullcontext

    from cvt_lab.complexity import count_preset

    try:
        from cvt_lab.models.cvt import fast_paths

        ctx = fast_paths(False)
    except (ImportError, TypeError):
        ctx = nullcontext()
    with ctx:
        return count_preset(name, size, **overrides)


def paper_config_size(spec: dict, row: dict, axis: str) -> tuple[float | None, float | None]:
    """Params (M) and GMACs of the row at the paper's configuration: the preset at 224 with the row's
    option (conf/<axis>/<option>.yaml) applied; options that take values from the scale are skipped.
    A row naming its own ``size`` (Tables 3, 4) is its preset at that size, with the classes of its
    ``data`` (conf/data/<data>.yaml) where it names one."""
    if "size" in row:
        try:
            extra = {}
            if row.get("data"):
                extra["num_classes"] = int(OmegaConf.load(config_dir() / "data" / f"{row['data']}.yaml").num_classes)
            c = _count_preset(row.get("preset", spec.get("preset")), int(row["size"]), **extra)
        except Exception:  # noqa: BLE001 - a report without sizes is still a report
            return None, None
        return c.params / 1e6, c.macs / 1e9

    def option_overrides(option: str) -> dict:
        raw = OmegaConf.load(config_dir() / axis / f"{option}.yaml")
        out: dict = {}
        for parent in raw.pop("defaults", []) or []:
            if parent != "_self_":
                out.update(option_overrides(parent))
        for key in raw:
            if not OmegaConf.is_interpolation(raw, key):
                out[key] = OmegaConf.to_container(raw, resolve=False)[key]
        return out

    try:
        c = _count_preset(row.get("preset", spec["preset"]), 224, **option_overrides(row["option"]))
    except Exception:  # noqa: BLE001 - a report without sizes is still a report
        return None, None
    return c.params / 1e6, c.macs / 1e9


# ---------------------------------------------------------------------------------------------- report


@dataclass
class RowResult:
    paper: dict
    accs: dict[int, float] = field(default_factory=dict)  # seed -> top-1 %
    failed: list[Job] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    params: float | None = None
    gmacs: float | None = None
    run_params: int | None = None
    run_model: str | None = None
    ran_as: str | None = None  # the option run for this row (itself, or its stand-in at this scale)
    not_run: str | None = None  # why this scale / sweep does not run the row


def scale_spec(spec: dict, scale: str | None) -> dict | None:
    """What ``scale`` runs of the table (``scales.<scale>`` in paper_tables.yaml), None: the paper's rows."""
    return (spec.get("scales") or {}).get(scale or "")


def build(sweep_dir: Path, spec: dict, seeds: list[int] | None, scale: str | None = None) -> tuple[list[RowResult], dict]:
    jobs = read_jobs(sweep_dir, spec["axis"], spec.get("row_format"))
    at_scale = scale_spec(spec, scale)
    paper_rows = list(spec["rows"]) + list((at_scale or {}).get("extra_rows") or [])
    options = [r["option"] for r in paper_rows]
    rows = {r["option"]: RowResult(paper=r, ran_as=r["option"]) for r in paper_rows}
    stand_ins = (at_scale or {}).get("stand_ins") or {}
    for paper_option, option in stand_ins.items():
        rows[paper_option].ran_as = option
    by_run = {res.ran_as: res for res in rows.values()}
    extra_options = {r["option"] for r in (at_scale or {}).get("extra_rows") or []}
    for res in rows.values():
        option = res.paper["option"]
        if res.paper.get("sweep") is False:
            res.not_run = f"not in this sweep: {res.paper.get('why', 'not run by the experiment')}"
        elif at_scale is not None and option not in stand_ins and option not in extra_options:
            res.not_run = f"not run at {scale} scale"
    other = [j for j in jobs if j.row not in by_run]
    for j in jobs:
        if j.row not in by_run:
            continue
        res = by_run[j.row]
        if j.status == "finished" and j.acc1 is not None:
            res.accs[j.seed] = j.acc1
            res.run_params, res.run_model = j.params, j.model
        elif j.status == "failed":
            res.failed.append(j)
    if seeds is None:
        seeds = sorted({j.seed for j in jobs if j.seed is not None}) or [0]
    for res in rows.values():
        failed_seeds = {j.seed for j in res.failed}
        res.failed = [j for j in res.failed if j.seed not in res.accs]
        res.missing = [] if res.not_run else [s for s in seeds if s not in res.accs and s not in failed_seeds]
        if res.not_run and (res.accs or res.failed):
            res.not_run = None  # run anyway (e.g. model=deit_s added on the command line)
        res.params, res.gmacs = paper_config_size(spec, res.paper, spec["axis"])
    return [rows[o] for o in options], {"seeds": seeds, "other": other}


def one_line(text: str | None, limit: int = 300) -> str:
    """An error message fit for a table cell: one line, no pipes, at most ``limit`` characters."""
    text = " ".join((text or "unknown error").split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def trained_lines(rows: list[dict]) -> list[str]:
    """Which model each scale trained, for which rows (whatever the paper's rows name)."""
    trained: dict[str, list[str]] = {}
    for r in rows:
        if r["run_model"]:
            trained.setdefault(f"{r['run_model']} ({r['run_params'] / 1e6:.2f}M params)", []).append(r["row"])
    if not trained:
        return []
    return ["", "Trained at this scale: " + "; ".join(f"{m} for rows {', '.join(v)}" for m, v in trained.items()) + "."]


def _fmt(x: float | None, spec: str = ".2f", sign: bool = False) -> str:
    if x is None:
        return "-"
    return format(x, ("+" if sign else "") + spec)


def table_rows(spec: dict, results: list[RowResult]) -> list[dict]:
    ref = next((r for r in results if r.paper["option"] == spec.get("reference")), None)
    out = []
    for r in results:
        accs = list(r.accs.values())
        mean, _half, sd = mean_ci(accs) if accs else (None, None, None)
        pairs = [] if ref is None else [r.accs[s] - ref.accs[s] for s in r.accs if s in ref.accs]
        if r is ref or not pairs:
            d_mean, d_half = None, None
        else:
            d_mean, d_half, _ = mean_ci(pairs)
        paper_d = None if r is ref or ref is None else r.paper["top1"] - ref.paper["top1"]
        if r.not_run:
            status = r.not_run
        else:
            status = "ok" if not r.failed and not r.missing else "; ".join(
                [f"failed seed {j.seed}: {one_line(j.error)}" for j in r.failed] + ([f"missing seeds {r.missing}"] if r.missing else []))
        out.append({
            "row": r.paper["row"], "option": r.paper["option"], "ran_as": r.ran_as, "model": r.paper.get("model", ""),
            "description": r.paper["desc"], "paper_top1": r.paper.get("top1"),
            **{f"paper_{k}": r.paper.get(k) for k in spec.get("paper_columns") or {}},
            "ours_top1_mean": mean, "ours_top1_std": sd, "n": len(accs),
            "seeds": ",".join(str(s) for s in sorted(r.accs)),
            "paper_diff": paper_d, "ours_diff": d_mean,
            "ours_diff_ci_low": None if d_half is None else d_mean - d_half,
            "ours_diff_ci_high": None if d_half is None else d_mean + d_half,
            "n_pairs": 0 if r is ref else len(pairs),
            "paper_params_m": r.paper.get("params"), "ours_params_m": r.params,
            "paper_gmacs": r.paper.get("gmacs"), "ours_gmacs": r.gmacs,
            "run_model": r.run_model, "run_params": r.run_params, "status": status,
        })
    return out


def markdown(table: str, spec: dict, rows: list[dict], meta: dict, sweep_dir: Path, extra: dict) -> str:
    ref = next(r for r in rows if r["option"] == spec["reference"])
    scale = meta.get("scale") or "?"
    has_macs = any(r["paper_gmacs"] is not None for r in rows)
    lines = [
        f"# {spec['title']}: the paper beside ours ({scale} scale)", "",
        f"Sweep: `{sweep_dir}` ({spec['experiment']}, rows = options of `{spec['axis']}`, seeds {meta['seeds']}).",
        f"Made by: `make {table}`{'' if scale == 'cpu' else ' SCALE=' + scale}, i.e. "
        f"`{meta.get('command') or 'python -m cvt_lab experiment=' + spec['experiment'] + ' -m'}` "
        f"then `python -m cvt_lab.report {sweep_dir}`.",
        "",
        f"Top-1 in %. Ours: test top-1, mean +/- std over seeds (n). Differences are against the reference row "
        f"**{ref['row']} ({ref['option']})**, ours paired by seed with a t-based 95% CI.",
        "Params / GMACs: the paper's columns beside ours counted at the paper's configuration "
        f"({spec['preset']} or DeiT-S at 224 with the row's option), whatever the scale trained.",
        "",
    ]
    head = "| row | option | model | paper top-1 | ours top-1 | n | paper diff | ours diff [95% CI] | params paper | params ours |"
    sep = "|---|---|---|---|---|---|---|---|---|---|"
    if has_macs:
        head += " GMACs paper | GMACs ours |"
        sep += "---|---|"
    head += " status |"
    sep += "---|"
    lines += [head, sep]
    for r in rows:
        ours = "-" if r["ours_top1_mean"] is None else (
            f"{r['ours_top1_mean']:.2f}" + ("" if r["ours_top1_std"] is None else f" +/- {r['ours_top1_std']:.2f}"))
        if r["option"] == spec["reference"]:
            diff, pdiff = "(reference)", "(reference)"
        else:
            pdiff = _fmt(r["paper_diff"], ".1f", True)
            diff = _fmt(r["ours_diff"], ".2f", True)
            if r["ours_diff_ci_low"] is not None:
                diff += f" [{r['ours_diff_ci_low']:+.2f}, {r['ours_diff_ci_high']:+.2f}]"
            if r["n_pairs"]:
                diff += f" (n={r['n_pairs']})"
        pp = "-" if r["paper_params_m"] is None else f"{r['paper_params_m']}M"
        op = "-" if r["ours_params_m"] is None else f"{r['ours_params_m']:.2f}M"
        line = (f"| {r['row']} | `{r['option']}` | {r['model']}: {r['description']} | {r['paper_top1']:.1f} | {ours} | "
                f"{r['n']} | {pdiff} | {diff} | {pp} | {op} |")
        if has_macs:
            line += f" {_fmt(r['paper_gmacs'])} | {_fmt(r['ours_gmacs'])} |"
        line += f" {r['status']} |"
        lines.append(line)
    lines += trained_lines(rows)
    bad = [r for r in rows if r["status"] != "ok"]
    lines += ["", "Failed or missing: " + ("none." if not bad else
                                          "; ".join(f"row {r['row']} ({r['option']}): {r['status']}" for r in bad))]
    if extra.get("other"):
        lines.append(f"Jobs outside the table's rows (ignored): {len(extra['other'])}.")
    return "\n".join(lines) + "\n"


def _cell(x: Any, decimals: int) -> str:
    return "-" if x is None else f"{x:.{decimals}f}"


def markdown_models(table: str, spec: dict, rows: list[dict], meta: dict, sweep_dir: Path, extra: dict) -> str:
    """Tables 3 and 4: rows are models (x size or dataset); no reference row, no differences."""
    scale = meta.get("scale") or "?"
    at_scale = scale_spec(spec, scale) or {}
    dec = int(spec.get("decimals", 1 if table == "table3" else 2))
    paper_cols = spec.get("paper_columns") or {}
    command = meta.get("command") or f"python -m cvt_lab experiment={spec['experiment']} -m"
    lines = [f"# {spec['title']}: the paper beside ours ({scale} scale)", ""]
    if at_scale.get("note"):
        lines += [f"**{at_scale['note'].strip()}**", ""]
    lines += [
        f"Sweep: `{sweep_dir}` ({spec['experiment']}, rows = `experiment.row`, seeds {meta['seeds']}).",
        f"Made by: `make {table}`{'' if scale == 'cpu' else ' SCALE=' + scale}, i.e. `{command}` "
        f"then `python -m cvt_lab.report {sweep_dir}`.",
        "",
        "Top-1 in %. Ours: test top-1, mean +/- std over seeds (n); `ran as`: the option this scale ran for the "
        "row. " + (f"{', '.join(paper_cols.values())}: the paper's only (not measured here). " if paper_cols else "")
        + "Params / GMACs: the paper's columns beside ours counted at the row's paper configuration "
        "(its model at its image size" + (", with the dataset's classes" if any(r.get("data") for r in spec["rows"]) else "")
        + "), whatever the scale trained.",
        "",
    ]
    head = "| row | option | model | paper top-1 | " + "".join(f"paper {v} | " for v in paper_cols.values())
    head += "ran as | ours top-1 | n | params paper | params ours | GMACs paper | GMACs ours | status |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ours = "-" if r["ours_top1_mean"] is None else (
            f"{r['ours_top1_mean']:.2f}" + ("" if r["ours_top1_std"] is None else f" +/- {r['ours_top1_std']:.2f}"))
        ran = "-" if r["status"].startswith("not ") else f"`{r['ran_as']}`"
        pp = "-" if r["paper_params_m"] is None else f"{r['paper_params_m']}M"
        op = "-" if r["ours_params_m"] is None else f"{r['ours_params_m']:.2f}M"
        pg = "-" if r["paper_gmacs"] is None else f"{r['paper_gmacs']}G"
        og = "-" if r["ours_gmacs"] is None else f"{r['ours_gmacs']:.{2 if r['ours_gmacs'] >= 1 else 4}f}G"
        line = f"| {r['row']} | `{r['option']}` | {r['model']}: {r['description']} | {_cell(r['paper_top1'], dec)} | "
        line += "".join(f"{_cell(r['paper_' + k], dec)} | " for k in paper_cols)
        line += f"{ran} | {ours} | {r['n']} | {pp} | {op} | {pg} | {og} | {r['status']} |"
        lines.append(line)
    lines += trained_lines(rows)
    not_run = [r for r in rows if r["status"].startswith("not ")]
    if not_run:
        lines += ["Not run: " + "; ".join(f"row {r['row']} ({r['option']}): {r['status']}" for r in not_run) + "."]
    bad = [r for r in rows if r["status"] != "ok" and not r["status"].startswith("not ")]
    lines += ["", "Failed or missing: " + ("none." if not bad else
                                          "; ".join(f"row {r['row']} ({r['option']}): {r['status']}" for r in bad))]
    if extra.get("other"):
        lines.append(f"Jobs outside the table's rows (ignored): {len(extra['other'])} "
                     f"({', '.join(sorted({str(j.row) for j in extra['other']}))}).")
    return "\n".join(lines) + "\n"


def plot_models(spec: dict, rows: list[dict], results: list[RowResult], path: Path, scale: str) -> None:
    """Tables 3 and 4: ours per row that ran (bars, seeds) and the paper's numbers per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ran = [(r, res) for r, res in zip(rows, results) if res.accs or not r["status"].startswith("not ")]
    x = range(len(ran))
    ax1.bar(x, [r["ours_top1_mean"] or 0 for r, _ in ran], yerr=[r["ours_top1_std"] or 0 for r, _ in ran],
            color="tab:blue", alpha=0.6, capsize=3)
    for i, (_, res) in enumerate(ran):
        ax1.plot([i] * len(res.accs), list(res.accs.values()), "k.", ms=5)
    vals = [v for _, res in ran for v in res.accs.values()]
    if vals:
        lo, hi = min(vals), max(vals)
        ax1.set_ylim(max(0, lo - 2 * (hi - lo + 0.5)), min(100, hi + (hi - lo + 0.5)))
    ax1.set_xticks(list(x), [f"{r['row']}: {r['ran_as']}" for r, _ in ran], rotation=30, ha="right")
    ax1.set_ylabel(f"ours: test top-1 % ({scale} scale)")
    ax1.set_title("ours per row run (bars: mean +/- std; dots: seeds)", fontsize=9)
    paper = [r for r in rows if r["paper_top1"] is not None]
    cols = {"top1": "top-1", **(spec.get("paper_columns") or {})}
    w = 0.8 / len(cols)
    for k, (key, label) in enumerate(cols.items()):
        ax2.bar([i - 0.4 + w * (k + 0.5) for i in range(len(paper))], [r[f"paper_{key}"] for r in paper], w, label=f"paper {label}")
    vals = [r[f"paper_{key}"] for r in paper for key in cols]
    if vals:
        ax2.set_ylim(max(0, min(vals) - 5), min(100, max(vals) + 2))
    ax2.set_xticks(list(range(len(paper))), [f"{r['row']}: {r['option']}" for r in paper], rotation=40, ha="right", fontsize=8)
    ax2.set_ylabel("paper top-1 %")
    ax2.set_title("the paper's numbers per row", fontsize=9)
    ax2.legend(fontsize=8, loc="lower left")
    fig.suptitle(spec["title"] + ("" if scale == "paper" else f"\n(ours at {scale} scale: a pipeline check, not comparable to the paper's numbers)"),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(spec: dict, rows: list[dict], results: list[RowResult], path: Path, scale: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['row']}: {r['option']}" for r in rows]
    x = range(len(rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    means = [r["ours_top1_mean"] or 0 for r in rows]
    stds = [r["ours_top1_std"] or 0 for r in rows]
    ax1.bar(x, means, yerr=stds, color="tab:blue", alpha=0.6, capsize=3)
    for i, res in enumerate(results):
        ax1.plot([i] * len(res.accs), list(res.accs.values()), "k.", ms=5)
    vals = [v for res in results for v in res.accs.values()]
    if vals:
        lo, hi = min(vals), max(vals)
        ax1.set_ylim(max(0, lo - 2 * (hi - lo + 0.5)), min(100, hi + (hi - lo + 0.5)))
    ax1.set_xticks(list(x), labels, rotation=30, ha="right")
    ax1.set_ylabel(f"ours: test top-1 % ({scale} scale)")
    ax1.set_title("ours per row (bars: mean +/- std; dots: seeds)")
    w = 0.38
    paper_d = [r["paper_diff"] or 0 for r in rows]
    ours_d = [r["ours_diff"] or 0 for r in rows]
    err = [[(r["ours_diff"] - r["ours_diff_ci_low"]) if r["ours_diff_ci_low"] is not None else 0 for r in rows],
           [(r["ours_diff_ci_high"] - r["ours_diff"]) if r["ours_diff_ci_high"] is not None else 0 for r in rows]]
    ax2.bar([i - w / 2 for i in x], paper_d, w, label="paper (ImageNet)", color="tab:gray")
    ax2.bar([i + w / 2 for i in x], ours_d, w, yerr=err, capsize=3, label=f"ours ({scale}), 95% CI", color="tab:blue")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_xticks(list(x), labels, rotation=30, ha="right")
    ax2.set_ylabel(f"top-1 difference vs row {spec['reference']} (points)")
    ax2.set_title("difference from the reference row")
    ax2.legend(fontsize=8)
    fig.suptitle(spec["title"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(sweep_dir: Path, out_dir: Path, table: str | None = None, paper_tables: Path | None = None) -> dict[str, Path]:
    """Write the report of one sweep; returns the paths written."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep directory {sweep_dir}; run the sweep first (make sweep EXP=...)")
    tables = load_paper_tables(paper_tables)
    meta = sweep_meta(sweep_dir)
    table = table or meta["table"] or sweep_dir.name.split("_")[0]
    if table not in tables:
        raise ValueError(f"no paper table {table!r} in {PAPER_TABLES}; known: {', '.join(tables)}")
    spec = tables[table]
    meta["scale"] = meta["scale"] or (sweep_dir.name.split("_", 1)[1] if "_" in sweep_dir.name else None)
    results, extra = build(sweep_dir, spec, meta["seeds"], meta["scale"])
    meta["seeds"] = extra["seeds"]
    rows = table_rows(spec, results)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = table if meta["scale"] in (None, "cpu") else f"{table}_{meta['scale']}"
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "png": out_dir / f"{stem}.png"}
    compare_models = spec.get("reference") is None
    paths["md"].write_text((markdown_models if compare_models else markdown)(table, spec, rows, meta, sweep_dir, extra))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    paths["csv"].write_text(buf.getvalue())
    (plot_models if compare_models else plot)(spec, rows, results, paths["png"], meta["scale"] or "?")
    return paths


def experiment_sweep_dir(name: str, scale: str, sweeps: Path) -> Path:
    """The sweep directory of an experiment (conf/experiment/<name>.yaml) at a scale."""
    path = config_dir() / "experiment" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml") if not p.stem.startswith("_"))
        raise ValueError(f"no experiment {name!r}; known: {', '.join(known)}")
    table = OmegaConf.load(path).experiment.table
    return Path(sweeps) / f"{table}_{scale}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cvt_lab.report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", help="a sweep directory, or an experiment name (conf/experiment/)")
    p.add_argument("--out", type=Path, default=Path("experiments/reports"))
    p.add_argument("--table", help="the paper table (default: from the sweep)")
    p.add_argument("--scale", default="cpu", help="with an experiment name: the scale of its sweep")
    p.add_argument("--sweeps", type=Path, default=Path("outputs/sweeps"), help="with an experiment name: where sweeps are")
    a = p.parse_args(argv)
    try:
        sweep = Path(a.sweep)
        if not sweep.is_dir() and "/" not in a.sweep:
            sweep = experiment_sweep_dir(a.sweep, a.scale, a.sweeps)
        paths = report(sweep, a.out, a.table)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
