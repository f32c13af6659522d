"""Markdown and CSV of a paper table, read from the same rows (:class:`TableRow`) as its plot
(:mod:`cvt_lab.report.plot`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

from cvt_lab.report.analysis import Analysis, Section
from cvt_lab.report.claims import WITH_MARGIN, Judgement, has_noninferiority
from cvt_lab.report.metrics import METRICS, Metric
from cvt_lab.report.paper import has_paper, scale_spec
from cvt_lab.report.protocol import registration_lines, rules
from cvt_lab.report.rows import TableRow
from cvt_lab.report.stats import NOT_BETTER, NOT_WORSE

IDENTITY_CHARS = 10  # enough to tell runs apart in a table
# What every row of a setting trained on and for how long, printed above its table: these keys and the data.*
# keys of its run identity (which holds none of results.NOT_IDENTITY, e.g. data.root), but these.
SETUP_KEYS = ("recipe.epochs", "recipe.batch_size", "recipe.optimizer.lr", "recipe.image_size")
NOT_SETUP_DATA_KEYS = ("data.in_chans", "data.finetune_steps", "data.num_samples", "data.val_fraction")


def _num(x: float | None, fmt: str = ".2f", unit: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{unit}"


NO_PAPER = "—"  # a paper cell of a table the paper does not have (paper: false)


def _paper_decimals(spec: dict, key: str) -> int:
    return 1 if all(round(r[key], 1) == r[key] for r in spec["rows"] if r.get(key) is not None) else 2


def expect_text(r: TableRow) -> str:
    """A row's expectation as the verdict column states it: the sign (``+``/``-``/``0``; with "better" / "worse"
    spelled out for a lower-is-better metric, whose better difference is negative), or the non-inferiority claim
    with its subject (the row it is about) and the row it is compared with."""
    if r.expect in (NOT_WORSE, NOT_BETTER):
        subject, other = (r, r.against) if r.expect == NOT_WORSE else (r.against, r)
        return f"`{subject.option}` not worse than `{other.option}`"
    if not r.metric.higher_is_better and r.expect in ("+", "-"):
        return f"{r.expect} ({'better' if r.expect == '+' else 'worse'})"
    return str(r.expect)


def columns(spec: dict, reference: TableRow | None,
            metric: Metric = METRICS["test/acc1"]) -> list[tuple[str, Callable[[TableRow], str]]]:
    """The markdown columns: those every table has, and those its paper row fields call for."""
    dec = _paper_decimals(spec, metric.column)
    paper_cols = spec.get("paper_columns") or {}
    paper = has_paper(spec)

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
            if r.judgement and r.judgement.kind in WITH_MARGIN:
                text += f" ({100 * r.judgement.level:.0f}%)"
        return text + r.vs_note(reference)

    def test(r: TableRow) -> str:
        return "" if r.judgement is None else test_cell(r.judgement)

    def paper_diff(r: TableRow) -> str:
        if r.is_reference:
            return "(reference)"
        return (_num(r.paper_diff, "+.1f") if paper else NO_PAPER) + r.vs_note(reference)

    def described(r: TableRow) -> str:
        mean, sd = r.described_mean_std
        return _num(mean) + ("" if sd is None else f" +/- {sd:.2f}")

    def verdict(r: TableRow) -> str:
        if r.is_reference:
            return ""
        if r.expect is None:
            return "(not part of the claim)"
        j = r.judgement
        text = f"{expect_text(r)}: **{r.verdict or '-'}**"
        if j is not None and j.why_not:
            text += f" ({j.why_not})"
        if j is not None and j.control:
            text += " (control)"
        return text

    cols = [("row", lambda r: r.paper["row"]), ("option", lambda r: f"`{r.option}`"),
            ("model", lambda r: f"{r.paper.get('model', '')}: {r.paper['desc']}"),
            (f"paper {metric.label}", lambda r: _num(r.paper.get(metric.column), f".{dec}f") if paper else NO_PAPER)]
    cols += [(f"paper {label}", lambda r, k=key: _num(r.paper.get(k), f".{dec}f")) for key, label in paper_cols.items()]
    if spec.get("scales"):
        cols.append(("ran as", lambda r: "-" if r.not_run else f"`{r.ran_as}`"))
    cols += [(f"ours {metric.label}", ours), ("n", lambda r: str(len(r.values)))]
    if metric.companion:  # described, not tested
        cols.append((f"ours {metric.companion.split('/')[1].upper()}", described))
    if reference is not None:
        cols += [("paper diff", paper_diff), ("ours diff [CI]", ours_diff)]
        if any("expect" in r for r in spec["rows"]):
            header = "test: p (Holm) / TOST p vs margin"
            header += " / one-sided p (Holm) vs margin" if has_noninferiority(spec) else ""
            header += "; effect / paper's" if paper else ""
            cols += [(header, test), ("paper's sign: ours" if paper else "expected: ours", verdict)]
    if not paper:  # no paper configuration to count sizes at: the trained model's size is stated below the table
        return cols + [("status", lambda r: r.status)]
    cols += [("params paper", lambda r: _num(r.paper.get("params"), "", "M")),
             ("params ours", lambda r: _num(r.params, ".2f", "M"))]
    if reference is None or any(r.get("gmacs") is not None for r in spec["rows"]):  # models differ in compute
        cols += [("GMACs paper", lambda r: _num(r.paper.get("gmacs"), "", "G")),
                 ("GMACs ours", lambda r: _num(r.gmacs, ".2f" if (r.gmacs or 0) >= 1 else ".4f", "G"))]
    return cols + [("status", lambda r: r.status)]


def test_cell(j: Judgement) -> str:
    """A test's numbers: raw and Holm-adjusted p (signed, non-inferiority), TOST p against the margin
    (equivalence), effect ratio."""
    if j.estimate is None:
        return "-"
    holm = (f" ({_p(j.p_adjusted)})" if j.p_adjusted is not None else " (control: alone)" if j.control else " (-)")
    if j.kind == "equivalence":
        text = f"TOST p {_p(j.p)} vs +/-{j.margin:g}" if j.margin is not None else "no margin"
    elif j.kind == "noninferiority":
        text = f"one-sided p {_p(j.p)}{holm} vs {j.margin:g}" if j.margin is not None else "no margin"
    else:
        text = f"p {_p(j.p)}" + holm
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


def _jobs_table(section: Section, metric: Metric) -> list[str]:
    lines = [f"| job directory | row | seed | status | {metric.key} % | prereg sha256 | identity |",
             "|---|---|---|---|---|---|---|"]
    for r in section.rows:
        for j in sorted(r.used, key=lambda j: (j.seed is None, j.seed)):
            identity = (j.identity or "-")[:IDENTITY_CHARS]
            value = j.metric(metric.key) if j.finished else None
            lines.append(f"| `{j.run_dir}` | {r.paper['row']} ({r.ran_as}) | {j.seed} | {j.status} | "
                         f"{_num(value)} | {(j.prereg_sha256 or '-')[:IDENTITY_CHARS]} | {identity} |")
    return lines


def section_markdown(spec: dict, section: Section, index: int, count: int, metric: Metric) -> list[str]:
    s = section.setting
    finished = sum(len(r.values) for r in section.rows)
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
    cols = columns(spec, section.reference, metric)
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
            f"row {d.used.row} seed {d.job.seed}: `{d.job.run_dir}` ({d.job.status}, "
            f"{_num(d.job.metric(metric.key))}) beside the used `{d.used.run_dir}` "
            f"({_num(d.used.metric(metric.key))})" for d in section.duplicates) + "."]
    return lines + ["", *_jobs_table(section, metric), ""]


def markdown(a: Analysis) -> str:
    spec, meta, sections, sweep_dir, table = a.spec, a.meta, a.sections, a.sweep_dir, a.table
    scale = meta.get("scale") or "?"
    note = (scale_spec(spec, scale) or {}).get("note")
    reference = sections[0].reference
    n_jobs = sum(len(s.setting.jobs) for s in sections)
    paper = has_paper(spec)
    # a paper table's target is its name; a table of ours is made by its experiment's target (make htr_ablation_*)
    make = f"make {table if paper else spec['experiment']}" + ("" if scale == "cpu" else f" SCALE={scale}")
    metric = a.metric
    lines = [f"# {spec['title']}{': the paper beside ours' if paper else ''} ({scale} scale)", ""]
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
        (f"Top-1 in %. Ours: {metric.description}, mean +/- std over seeds (n)." if metric.higher_is_better else
         f"{metric.label} in %, lower is better. Ours: {metric.description}, mean +/- std over seeds (n)"
         + (f"; {metric.companion.split('/')[1].upper()} beside it, described, not tested." if metric.companion
            else "."))
        + (f" Differences are against the reference row **{reference.paper['row']} ({reference.option})** "
           "(or the row named after `vs`), with their interval at 1 - alpha (1 - 2 alpha for `0` rows"
           + (" and non-inferiority rows" if has_noninferiority(spec) else "") + ")."
           if reference else "")
        + (" `ran as`: the option this scale ran for the row." if spec.get("scales") else "")
        + "".join(f" {label}: the paper's only (not measured here)."
                  for label in (spec.get("paper_columns") or {}).values()),
        ("Params / GMACs: the paper's columns beside ours counted at the row's paper configuration "
         + (f"({spec['preset']} or DeiT-S at 224 with the row's option)" if "preset" in spec else
            "(its model at its image size"
            + (", with the dataset's classes" if any(r.get("data") for r in spec["rows"]) else "") + ")")
         + ", whatever the scale trained.") if paper else
        "The paper has no such table: its column shows " + NO_PAPER + ", the claim is the paper's transposed; the "
        "model trained and its size are stated under each table.",
        "",
    ]
    if reference is not None and spec.get("claim"):
        lines += [rules(spec, metric), ""]
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
