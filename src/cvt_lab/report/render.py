"""Markdown, CSV and plot of a paper table, all read from the same rows (:class:`TableRow`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cvt_lab.report.jobs import Job, Setting
from cvt_lab.report.paper import scale_spec
from cvt_lab.report.rows import Duplicate, TableRow, claim_verdict

IDENTITY_CHARS = 10  # enough to tell runs apart in a table
# What every row of a setting trained on and for how long, printed above its table: these keys and the data.*
# keys of its run identity (which holds none of results.NOT_IDENTITY, e.g. data.root), but these.
SETUP_KEYS = ("recipe.epochs", "recipe.batch_size", "recipe.optimizer.lr", "recipe.image_size")
NOT_SETUP_DATA_KEYS = ("data.in_chans", "data.finetune_steps", "data.num_samples", "data.val_fraction")


@dataclass
class Section:
    """One setting's table."""

    setting: Setting
    rows: list[TableRow]
    duplicates: list[Duplicate]

    @property
    def reference(self) -> TableRow | None:
        return next((r for r in self.rows if r.is_reference), None)


def _num(x: float | None, fmt: str = ".2f", unit: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{unit}"


def _paper_decimals(spec: dict) -> int:
    return 1 if all(round(r["top1"], 1) == r["top1"] for r in spec["rows"] if r.get("top1") is not None) else 2


def columns(spec: dict, reference: TableRow | None) -> list[tuple[str, Callable[[TableRow], str]]]:
    """The markdown columns: those every table has, and those its paper row fields call for."""
    dec = _paper_decimals(spec)
    paper_cols = spec.get("paper_columns") or {}

    def ours(r: TableRow) -> str:
        mean, sd = r.mean_std
        return _num(mean) + ("" if sd is None else f" +/- {sd:.2f}")

    def ours_diff(r: TableRow) -> str:
        if r.is_reference:
            return "(reference)"
        diff, low, high = r.diff_ci
        text = _num(diff, "+.2f")
        if low is not None:
            text += f" [{low:+.2f}, {high:+.2f}]"
        return text + _vs(r, reference)

    def paper_diff(r: TableRow) -> str:
        return "(reference)" if r.is_reference else _num(r.paper_diff, "+.1f") + _vs(r, reference)

    def verdict(r: TableRow) -> str:
        if r.is_reference:
            return ""
        return "(not part of the claim)" if r.expect is None else f"{r.expect}: {r.verdict or '-'}"

    cols = [("row", lambda r: r.paper["row"]), ("option", lambda r: f"`{r.option}`"),
            ("model", lambda r: f"{r.paper.get('model', '')}: {r.paper['desc']}"),
            ("paper top-1", lambda r: _num(r.paper.get("top1"), f".{dec}f"))]
    cols += [(f"paper {label}", lambda r, k=key: _num(r.paper.get(k), f".{dec}f")) for key, label in paper_cols.items()]
    if spec.get("scales"):
        cols.append(("ran as", lambda r: "-" if r.not_run else f"`{r.ran_as}`"))
    cols += [("ours top-1", ours), ("n", lambda r: str(len(r.accs)))]
    if reference is not None:
        cols += [("paper diff", paper_diff), ("ours diff [95% CI]", ours_diff)]
        if any("expect" in r for r in spec["rows"]):
            cols.append(("paper's sign: ours", verdict))
    cols += [("params paper", lambda r: _num(r.paper.get("params"), "", "M")),
             ("params ours", lambda r: _num(r.params, ".2f", "M"))]
    if reference is None or any(r.get("gmacs") is not None for r in spec["rows"]):  # models differ in compute
        cols += [("GMACs paper", lambda r: _num(r.paper.get("gmacs"), "", "G")),
                 ("GMACs ours", lambda r: _num(r.gmacs, ".2f" if (r.gmacs or 0) >= 1 else ".4f", "G"))]
    return cols + [("status", lambda r: r.status)]


def _vs(r: TableRow, reference: TableRow) -> str:
    return "" if r.against is None or r.against is reference else f" vs {r.against.paper['row']}"


def claim_lines(spec: dict, section: Section) -> list[str]:
    """The claim the table tests and, per setting, whether our rows reproduce it."""
    answer = claim_verdict(section.rows)
    if not spec.get("claim") or answer is None:
        return []
    judged = [r for r in section.rows if r.verdict]
    per_row = "; ".join(f"{r.paper['row']} ({r.option}) {r.expect}: {r.verdict}" for r in judged)
    return [f"**Claim {answer} at this scale** ({per_row}).", ""]


def setup_line(section: Section) -> str | None:
    """The data and budget every row of the setting ran with, read from a job's run identity."""
    job = next((j for r in section.rows for j in r.used if j.config), None)
    if job is None:
        return None
    keys = [k for k in sorted(job.config) if k.startswith("data.") and k not in NOT_SETUP_DATA_KEYS]
    keys += [k for k in SETUP_KEYS if k in job.config]
    return "Every row ran with: " + ", ".join(f"`{k}={job.config[k]}`" for k in keys) + "."


def _trained(rows: list[TableRow]) -> str | None:
    """Which model the scale trained, for which rows (whatever the paper's rows name)."""
    trained: dict[str, list[str]] = {}
    for r in rows:
        run = next((j for j in r.used if j.finished and j.model), None)
        if run:
            trained.setdefault(f"{run.model} ({(run.params or 0) / 1e6:.2f}M params)", []).append(r.paper["row"])
    if not trained:
        return None
    return "Trained at this scale: " + "; ".join(f"{m} for rows {', '.join(v)}" for m, v in trained.items()) + "."


def _jobs_table(section: Section) -> list[str]:
    lines = ["| job directory | row | seed | status | top-1 | identity |", "|---|---|---|---|---|---|"]
    for r in section.rows:
        for j in sorted(r.used, key=lambda j: (j.seed is None, j.seed)):
            identity = (j.identity or "-")[:IDENTITY_CHARS]
            lines.append(f"| `{j.run_dir}` | {r.paper['row']} ({r.ran_as}) | {j.seed} | {j.status} | "
                         f"{_num(j.acc1)} | {identity} |")
    return lines


def section_markdown(spec: dict, section: Section, index: int, count: int) -> list[str]:
    s = section.setting
    finished = sum(len(r.accs) for r in section.rows)
    if count > 1:
        lines = [f"## Setting {index} of {count}: {s.label}", ""]
    else:
        lines = [f"One setting: {s.label}." if s.by_overrides else
                 "One setting: every job shares its configuration but the row and the seed.", ""]
    used = sum(len(r.used) for r in section.rows)
    lines += [f"{used} job{'s' if used != 1 else ''} used ({finished} finished), seeds {s.seeds}.", ""]
    setup = setup_line(section)
    lines += [setup, ""] if setup else []
    lines += claim_lines(spec, section)
    cols = columns(spec, section.reference)
    lines += ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r) for _, cell in cols) + " |" for r in section.rows]
    lines.append("")
    trained = _trained(section.rows)
    if trained:
        lines.append(trained)
    not_run = [r for r in section.rows if r.not_run]
    if not_run and spec.get("scales"):
        lines.append("Not run: " + "; ".join(f"row {r.paper['row']} ({r.option}): {r.status}" for r in not_run) + ".")
    bad = [r for r in section.rows if r.status != "ok" and not r.not_run]
    if lines[-1]:
        lines.append("")
    lines.append("Failed or missing: " + ("none." if not bad else
                                         "; ".join(f"row {r.paper['row']} ({r.option}): {r.status}" for r in bad)))
    if section.duplicates:
        lines += ["", "Duplicates (the same row and seed run again; the first finished job is used): " + "; ".join(
            f"row {d.used.row} seed {d.job.seed}: `{d.job.run_dir}` ({d.job.status}, {_num(d.job.acc1)}) "
            f"beside the used `{d.used.run_dir}` ({_num(d.used.acc1)})" for d in section.duplicates) + "."]
    return lines + ["", *_jobs_table(section), ""]


def markdown(table: str, spec: dict, sections: list[Section], meta: dict, sweep_dir: Path, other: list[Job]) -> str:
    scale = meta.get("scale") or "?"
    note = (scale_spec(spec, scale) or {}).get("note")
    reference = sections[0].reference
    n_jobs = sum(len(s.setting.jobs) for s in sections)
    make = f"make {table}" + ("" if scale == "cpu" else f" SCALE={scale}")
    lines = [f"# {spec['title']}: the paper beside ours ({scale} scale)", ""]
    if spec.get("claim"):
        lines += [f"**The claim tested:** {' '.join(spec['claim'].split())}", ""]
    at_scale = (scale_spec(spec, scale) or {}).get("setup")
    if at_scale:
        lines += [f"**How this scale tests it:** {' '.join(at_scale.split())}", ""]
    if note:
        lines += [f"**{note.strip()}**", ""]
    lines += [
        f"Sweep: `{sweep_dir}` (experiment `{spec['experiment']}`, rows = `{spec['axis']}`): "
        f"{n_jobs} job{'s' if n_jobs != 1 else ''} of this table in "
        f"{len(sections)} setting{'s' if len(sections) > 1 else ''}"
        + (f"; {len(other)} jobs outside its rows, ignored ({', '.join(sorted({str(j.row) for j in other}))})"
           if other else "")
        + ".",
        f"Made by: `{make}`; the last command run into the sweep: "
        f"`{meta.get('command') or 'python -m cvt_lab experiment=' + spec['experiment'] + ' -m'}`, "
        f"then `python -m cvt_lab.report {sweep_dir}`.",
        "",
        "Each table holds only jobs whose run identity (the configuration that defines a result) is the same but "
        "for the row and the seed; jobs that differ in anything else make a table of their own, named by the keys "
        "that differ. The job list under each table gives every job used, with its identity.",
        "",
        "Top-1 in %. Ours: test top-1, mean +/- std over seeds (n)."
        + (f" Differences are against the reference row **{reference.paper['row']} ({reference.option})** "
           "(or the row named after `vs`): ours with Welch's 95% interval for a difference of two means over "
           "seeds. Verdict per row: the paper's sign of the difference (`+` better, `-` worse, `0` no difference) "
           "and whether ours **agrees** (interval excludes zero on that side), **disagrees** (excludes zero on "
           "the other side; for `0`, on either side) or is **not separated** (interval includes zero)."
           if reference else "")
        + (" `ran as`: the option this scale ran for the row." if spec.get("scales") else "")
        + "".join(f" {label}: the paper's only (not measured here)."
                  for label in (spec.get("paper_columns") or {}).values()),
        "Params / GMACs: the paper's columns beside ours counted at the row's paper configuration "
        + (f"({spec['preset']} or DeiT-S at 224 with the row's option)" if "preset" in spec else
           "(its model at its image size"
           + (", with the dataset's classes" if any(r.get("data") for r in spec["rows"]) else "") + ")")
        + ", whatever the scale trained.",
        "",
    ]
    for i, section in enumerate(sections, 1):
        lines += section_markdown(spec, section, i, len(sections))
    return "\n".join(lines).rstrip() + "\n"


def csv_text(spec: dict, sections: list[Section]) -> str:
    records = [r.record(spec, s.setting, s.reference) for s in sections for r in s.rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def plot(spec: dict, sections: list[Section], path: Path, scale: str) -> None:
    """Per setting: ours per row (bars: mean +/- std, dots: seeds) and, beside it, the differences from the
    reference row (paper vs ours, 95% CI) or, for a table without one, the paper's numbers per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sections), 2, figsize=(12, 4.5 * len(sections)), squeeze=False)
    for (ax1, ax2), section in zip(axes, sections):
        ran = [r for r in section.rows if r.used or not r.not_run]
        x = list(range(len(ran)))
        stats = [r.mean_std for r in ran]
        ax1.bar(x, [m or 0 for m, _ in stats], yerr=[sd or 0 for _, sd in stats], color="tab:blue", alpha=0.6,
                capsize=3)
        for i, r in enumerate(ran):
            ax1.plot([i] * len(r.accs), list(r.accs.values()), "k.", ms=5)
        vals = [v for r in ran for v in r.accs.values()]
        if vals:
            lo, hi = min(vals), max(vals)
            ax1.set_ylim(max(0, lo - 2 * (hi - lo + 0.5)), min(100, hi + (hi - lo + 0.5)))
        ax1.set_xticks(x, [f"{r.paper['row']}: {r.ran_as}" for r in ran], rotation=30, ha="right", fontsize=8)
        ax1.set_ylabel(f"ours: test top-1 % ({scale} scale)")
        title = "ours per row (bars: mean +/- std; dots: seeds)"
        ax1.set_title(title if len(sections) == 1 else f"{section.setting.label}\n{title}", fontsize=9)
        if section.reference is not None:
            _plot_diffs(ax2, section, scale)
        else:
            _plot_paper(ax2, spec, section.rows)
    if scale == "paper":
        subtitle = ""
    elif spec.get("claim"):
        subtitle = (f"\n(ours at {scale} scale, on a task of its own: numbers not comparable to the paper's; "
                    "the signs of the differences test the claim)")
    else:
        subtitle = f"\n(ours at {scale} scale: a pipeline check, not comparable to the paper's numbers)"
    fig.suptitle(spec["title"] + subtitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_diffs(ax, section: Section, scale: str) -> None:
    rows, ref = section.rows, section.reference
    x = list(range(len(rows)))
    diffs = [r.diff_ci for r in rows]
    err = [[0 if lo is None else d - lo for d, lo, _ in diffs], [0 if hi is None else hi - d for d, _, hi in diffs]]
    w = 0.38
    ax.bar([i - w / 2 for i in x], [r.paper_diff or 0 for r in rows], w, label="paper (ImageNet)", color="tab:gray")
    ax.bar([i + w / 2 for i in x], [d or 0 for d, _, _ in diffs], w, yerr=err, capsize=3,
           label=f"ours ({scale}), 95% CI", color="tab:blue")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [f"{r.paper['row']}: {r.option}" + (f"\n{r.verdict}" if r.verdict else "") + _vs(r, ref)
                      for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"top-1 difference vs row {ref.paper['row']} (points)")
    ax.set_title("difference from the reference row", fontsize=9)
    ax.legend(fontsize=8)


def _plot_paper(ax, spec: dict, rows: list[TableRow]) -> None:
    paper = [r for r in rows if r.paper.get("top1") is not None]
    cols = {"top1": "top-1", **(spec.get("paper_columns") or {})}
    w = 0.8 / len(cols)
    for k, (key, label) in enumerate(cols.items()):
        ax.bar([i - 0.4 + w * (k + 0.5) for i in range(len(paper))], [r.paper[key] for r in paper], w,
               label=f"paper {label}")
    vals = [r.paper[key] for r in paper for key in cols]
    if vals:
        ax.set_ylim(max(0, min(vals) - 5), min(100, max(vals) + 2))
    ax.set_xticks(list(range(len(paper))), [f"{r.paper['row']}: {r.option}" for r in paper], rotation=40, ha="right",
                  fontsize=8)
    ax.set_ylabel("paper top-1 %")
    ax.set_title("the paper's numbers per row", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
