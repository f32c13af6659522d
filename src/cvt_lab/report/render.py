"""Markdown, CSV and plot of a paper table, all read from the same rows (:class:`TableRow`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from cvt_lab.report.analysis import Analysis, Section
from cvt_lab.report.claims import Judgement
from cvt_lab.report.paper import scale_spec
from cvt_lab.report.rows import TableRow

IDENTITY_CHARS = 10  # enough to tell runs apart in a table
# What every row of a setting trained on and for how long, printed above its table: these keys and the data.*
# keys of its run identity (which holds none of results.NOT_IDENTITY, e.g. data.root), but these.
SETUP_KEYS = ("recipe.epochs", "recipe.batch_size", "recipe.optimizer.lr", "recipe.image_size")
NOT_SETUP_DATA_KEYS = ("data.in_chans", "data.finetune_steps", "data.num_samples", "data.val_fraction")


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
            if r.judgement and r.judgement.kind == "equivalence":
                text += f" ({100 * r.judgement.level:.0f}%)"
        return text + _vs(r, reference)

    def test(r: TableRow) -> str:
        return "" if r.judgement is None else test_cell(r.judgement)

    def paper_diff(r: TableRow) -> str:
        return "(reference)" if r.is_reference else _num(r.paper_diff, "+.1f") + _vs(r, reference)

    def verdict(r: TableRow) -> str:
        if r.is_reference:
            return ""
        if r.expect is None:
            return "(not part of the claim)"
        j = r.judgement
        text = f"{r.expect}: **{r.verdict or '-'}**"
        if j is not None and j.why_not:
            text += f" ({j.why_not})"
        if j is not None and j.control:
            text += " (control)"
        return text

    cols = [("row", lambda r: r.paper["row"]), ("option", lambda r: f"`{r.option}`"),
            ("model", lambda r: f"{r.paper.get('model', '')}: {r.paper['desc']}"),
            ("paper top-1", lambda r: _num(r.paper.get("top1"), f".{dec}f"))]
    cols += [(f"paper {label}", lambda r, k=key: _num(r.paper.get(k), f".{dec}f")) for key, label in paper_cols.items()]
    if spec.get("scales"):
        cols.append(("ran as", lambda r: "-" if r.not_run else f"`{r.ran_as}`"))
    cols += [("ours top-1", ours), ("n", lambda r: str(len(r.accs)))]
    if reference is not None:
        cols += [("paper diff", paper_diff), ("ours diff [CI]", ours_diff)]
        if any("expect" in r for r in spec["rows"]):
            cols += [("test: p (Holm) / TOST p vs margin; effect / paper's", test), ("paper's sign: ours", verdict)]
    cols += [("params paper", lambda r: _num(r.paper.get("params"), "", "M")),
             ("params ours", lambda r: _num(r.params, ".2f", "M"))]
    if reference is None or any(r.get("gmacs") is not None for r in spec["rows"]):  # models differ in compute
        cols += [("GMACs paper", lambda r: _num(r.paper.get("gmacs"), "", "G")),
                 ("GMACs ours", lambda r: _num(r.gmacs, ".2f" if (r.gmacs or 0) >= 1 else ".4f", "G"))]
    return cols + [("status", lambda r: r.status)]


def _vs(r: TableRow, reference: TableRow) -> str:
    return "" if r.against is None or r.against is reference else f" vs {r.against.paper['row']}"


def test_cell(j: Judgement) -> str:
    """A test's numbers: raw and Holm-adjusted p (signed), TOST p against the margin (equivalence), effect ratio."""
    if j.estimate is None:
        return "-"
    if j.kind == "equivalence":
        text = f"TOST p {_p(j.p)} vs +/-{j.margin:g}" if j.margin is not None else "no margin"
    else:
        text = f"p {_p(j.p)}" + (f" ({_p(j.p_adjusted)})" if j.p_adjusted is not None else
                                 " (control: alone)" if j.control else " (-)")
    if j.ratio is not None:
        text += f"; x{j.ratio:.1f} the paper's"
    return text


def _p(p: float | None) -> str:
    return "-" if p is None else "<0.0001" if p < 1e-4 else f"{p:.4f}"


def claim_lines(spec: dict, section: Section) -> list[str]:
    """The setting's label (confirmatory or exploratory, with the reasons) and the verdict on the claim."""
    claim = section.claim
    if not spec.get("claim"):
        return []
    label = claim.label.capitalize()
    tests = [j for j in section.tests + claim.contrasts]
    per_test = "; ".join(f"{j.name} {j.expect}: {j.verdict}" + (" (control)" if j.control else "") for j in tests)
    lines = [f"**{label}: claim {claim.verdict} at this scale** ({per_test}).", ""]
    if claim.reasons:
        lines += ["Exploratory because: " + "; ".join(claim.reasons) + ".", ""]
    if claim.incomplete:
        lines += ["Incomplete: " + "; ".join(claim.incomplete) + ".", ""]
    if claim.family:
        lines += [claim.family + ".", ""]
    for c in claim.contrasts:
        est = c.estimate
        ci = "" if est is None else " [{:+.2f}, {:+.2f}]".format(*est.interval(c.level))
        lines += [f"Registered contrast `{c.name}` ({c.expect}): "
                  + ("-" if est is None else f"{est.value:+.2f}{ci}, {test_cell(c)}")
                  + f": **{c.verdict}**" + (f" ({c.why_not})" if c.why_not else "") + ".", ""]
    if claim.ordering:
        lines += [f"Ordering claim: {claim.ordering}.", ""]
    return lines


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


def _jobs_table(section: Section, metric: str) -> list[str]:
    lines = [f"| job directory | row | seed | status | {metric} % | prereg sha256 | identity |",
             "|---|---|---|---|---|---|---|"]
    for r in section.rows:
        for j in sorted(r.used, key=lambda j: (j.seed is None, j.seed)):
            identity = (j.identity or "-")[:IDENTITY_CHARS]
            value = j.metric(metric) if j.finished else None
            lines.append(f"| `{j.run_dir}` | {r.paper['row']} ({r.ran_as}) | {j.seed} | {j.status} | "
                         f"{_num(value)} | {(j.prereg_sha256 or '-')[:IDENTITY_CHARS]} | {identity} |")
    return lines


def section_markdown(spec: dict, section: Section, index: int, count: int, metric: str) -> list[str]:
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
    lines.append("Failed or missing (or still running): " + ("none." if not bad else
                                         "; ".join(f"row {r.paper['row']} ({r.option}): {r.status}" for r in bad)))
    if section.duplicates:
        lines += ["", "Duplicates (the same row and seed run again; the first finished job is used): " + "; ".join(
            f"row {d.used.row} seed {d.job.seed}: `{d.job.run_dir}` ({d.job.status}, {_num(d.job.acc1)}) "
            f"beside the used `{d.used.run_dir}` ({_num(d.used.acc1)})" for d in section.duplicates) + "."]
    return lines + ["", *_jobs_table(section, metric), ""]


def registration_lines(a: Analysis) -> list[str]:
    """The pre-registration the report checks the sweep against, and the table's ledger of earlier settings."""
    lines = []
    if a.prereg is None:
        lines += ["**Pre-registration:** none for this table and scale (experiments/prereg/): every setting below "
                  "is exploratory.", ""]
    else:
        commit = (f"added in commit `{a.commit.short}` ({a.commit.date.isoformat()})" if a.commit else
                  "**not committed as it is now**")
        p = a.prereg
        lines += [f"**Pre-registration:** `{p.path}`, sha256 `{a.sha256}`, {commit}. Registered: metric `{p.metric}`, "
                  f"seeds {p.seeds}, rows {p.rows}, alpha {p.alpha:g}, family `{p.family}`, smallest effect of "
                  f"interest {p.smallest_effect:g} points, equivalence margins "
                  + (", ".join(f"`{k}` +/-{v:g}" for k, v in p.margins.items()) or "none")
                  + f", ceiling {p.ceiling:g}%, chance margin {p.chance_margin:g} points"
                  + (f", controls {p.controls}" if p.controls else "")
                  + (f", contrasts {[c.name for c in p.contrasts]}" if p.contrasts else "")
                  + f"; overrides `{' '.join(p.overrides)}`.", ""]
        if p.rationale:
            lines += [f"Why these settings (from the registration): {' '.join(p.rationale.split())}", ""]
    lines += [f"Note: {n}" for n in a.notes]
    if a.ledger:
        lines += ["Ledger (earlier settings of this table, oldest first; experiments/prereg/ledger.yaml):", "",
                  "| setting | commit | label | verdict |", "|---|---|---|---|"]
        lines += [f"| {' '.join(str(e.get('setting', '')).split())} | `{e.get('commit', '-')}` | "
                  f"{e.get('label', '-')} | {' '.join(str(e.get('verdict', '-')).split())} |" for e in a.ledger]
        lines.append("")
    return lines


RULES = (
    "How to read the verdicts (cvt_lab.report.claims; docs/ablations.md, 'The confirmation protocol'): "
    "a setting is **confirmatory** only when its table's pre-registration is committed before the first job "
    "started, every job carries the registration's sha256 and every job's run identity is the one the registered "
    "sweep composes to; else **exploratory**, with the reasons. Intervals count the seeds (Welch) and the test "
    "set (per-image outcomes, paired across rows, with one pseudo-image each way so that no interval has zero "
    "width); degrees of freedom by Welch-Satterthwaite. A signed row (`+`/`-`) is a two-sided test, its p "
    "Holm-adjusted across the family (raw and adjusted p printed): **agrees** / **disagrees** when the adjusted "
    "p < alpha on the paper's / the other side, else **not separated**. A `0` row is an equivalence test (TOST) "
    "against its registered margin, its interval at 1 - 2 alpha: **equivalent** (inside +/- margin), "
    "**differs** (two-sided p < alpha), else **not shown**; without a margin it is not judged. A comparison with "
    "a row at the ceiling or within the chance margin of chance is **not judged** unless the row is a registered "
    "control (judged alone, not part of the claim). The claim: **incomplete** while registered rows or seeds are "
    "missing; **reproduces** when every test of the claim agrees or is equivalent; **does not reproduce** when "
    "one disagrees or differs; **not tested** when none is judged; else **not shown**. Effects: points, and the "
    "ratio to the paper's difference."
)


def markdown(a: Analysis) -> str:
    spec, meta, sections, sweep_dir, table = a.spec, a.meta, a.sections, a.sweep_dir, a.table
    scale = meta.get("scale") or "?"
    note = (scale_spec(spec, scale) or {}).get("note")
    reference = sections[0].reference
    n_jobs = sum(len(s.setting.jobs) for s in sections)
    make = f"make {table}" + ("" if scale == "cpu" else f" SCALE={scale}")
    metric = {"test/acc1": "test top-1", "val/acc1": "validation top-1"}[a.metric]
    lines = [f"# {spec['title']}: the paper beside ours ({scale} scale)", ""]
    if spec.get("claim"):
        lines += [f"**The claim tested:** {' '.join(spec['claim'].split())}", ""]
    at_scale = (scale_spec(spec, scale) or {}).get("setup")
    if at_scale:
        lines += [f"**How this scale tests it:** {' '.join(at_scale.split())}", ""]
    if note:
        lines += [f"**{note.strip()}**", ""]
    if spec.get("claim"):
        lines += registration_lines(a)
    lines += [
        f"Sweep: `{sweep_dir}` (experiment `{spec['experiment']}`, rows = `{spec['axis']}`): "
        f"{n_jobs} job{'s' if n_jobs != 1 else ''} of this table in "
        f"{len(sections)} setting{'s' if len(sections) > 1 else ''}"
        + (f"; {len(a.other)} jobs outside its rows, ignored ({', '.join(sorted({str(j.row) for j in a.other}))})"
           if a.other else "")
        + ".",
        f"Made by: `{make}`; the last command run into the sweep: "
        f"`{meta.get('command') or 'python -m cvt_lab experiment=' + spec['experiment'] + ' -m'}`, "
        f"then `python -m cvt_lab.report {sweep_dir}`.",
        "",
        "Each table holds only jobs whose run identity (the configuration that defines a result) is the same but "
        "for the row and the seed; jobs that differ in anything else make a table of their own, named by the keys "
        "that differ. The job list under each table gives every job used, with its identity.",
        "",
        f"Top-1 in %. Ours: {metric}, mean +/- std over seeds (n)."
        + (f" Differences are against the reference row **{reference.paper['row']} ({reference.option})** "
           "(or the row named after `vs`), with their interval at 1 - alpha (1 - 2 alpha for `0` rows)."
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
    if reference is not None and spec.get("claim"):
        lines += [RULES, ""]
    for i, section in enumerate(sections, 1):
        lines += section_markdown(spec, section, i, len(sections), a.metric)
    return "\n".join(lines).rstrip() + "\n"


def csv_text(spec: dict, sections: list[Section]) -> str:
    records = [r.record(spec, s.setting, s.reference) for s in sections for r in s.rows]
    buf = io.StringIO()
    fieldnames = list(dict.fromkeys(k for r in records for k in r))  # rows without a test lack its columns
    writer = csv.DictWriter(buf, fieldnames=fieldnames)
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
        ax1.set_ylabel(f"ours: top-1 % ({scale} scale)")
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
           label=f"ours ({scale}), interval of its test", color="tab:blue")
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
