"""A sweep analysed as a paper table: its settings' rows, each setting labelled confirmatory or exploratory
against the table's pre-registration, its tests Holm-corrected across the registered family, its verdicts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvt_lab.report.claims import (CONFIRMATORY, CORRECTED, EXPLORATORY, Claim, Judgement, claim_verdict, decide,
                                   family_tests, kind_of, missing_runs, plan_tests)
from cvt_lab.report.jobs import Job, Setting, read_jobs, settings, sweep_meta
from cvt_lab.report.metrics import Metric, table_metric
from cvt_lab.report.paper import load_paper_tables
from cvt_lab.report.prereg import (LEDGER, PREREG_DIR, Commit, Prereg, PreregError, commit_that_added, find_prereg,
                                   ledger_entries, load_prereg, provenance, registered_identities)
from cvt_lab.report.rows import Duplicate, TableRow, build_rows, empty_rows
from cvt_lab.identity import file_sha256


@dataclass
class Section:
    """One setting's table and its claim."""

    setting: Setting
    rows: list[TableRow]
    duplicates: list[Duplicate]
    claim: Claim = field(default_factory=lambda: Claim(EXPLORATORY))
    tests: list[Judgement] = field(default_factory=list)

    @property
    def reference(self) -> TableRow | None:
        return next((r for r in self.rows if r.is_reference), None)

    @property
    def confirmatory(self) -> bool:
        return self.claim.label == CONFIRMATORY


@dataclass
class Analysis:
    table: str
    spec: dict
    meta: dict[str, Any]
    sweep_dir: Path
    metric: Metric  # what the rows compare (the table's, or a pilot's validation metric)
    sections: list[Section]
    other: list[Job]  # jobs outside the table's rows
    running: list[Job] = field(default_factory=list)  # jobs still running: in no row yet (the table is incomplete)
    prereg: Prereg | None = None
    sha256: str | None = None
    commit: Commit | None = None
    ledger: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what went wrong reading the registration


def _chance(section_jobs: list[Job], metric: Metric) -> float | None:
    """The metric's chance level in %: its own (CER), or 100 / the data's classes (accuracy)."""
    if metric.chance is not None:
        return metric.chance
    for j in section_jobs:
        value = j.config.get("data.num_classes")
        if value is not None:
            try:
                return 100.0 / float(json.loads(value) if value.startswith(("[", "{")) else value)
            except (ValueError, ZeroDivisionError):
                return None
    return None


def analyse(sweep_dir: Path, table: str | None = None, paper_tables: Path | None = None, metric: str | None = None,
            prereg_root: Path = PREREG_DIR, with_family: bool = True) -> Analysis:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep directory {sweep_dir}; run the sweep first (make sweep EXP=...)")
    tables = load_paper_tables(paper_tables)
    meta = sweep_meta(sweep_dir)
    table = table or meta["table"] or _table_of_dirname(sweep_dir.name, tables)
    if table not in tables or "experiment" not in tables[table]:
        known = [t for t, spec in tables.items() if "experiment" in spec]
        raise ValueError(f"no swept paper table {table!r}; known: {', '.join(known)}")
    spec = tables[table]
    meta["scale"] = meta["scale"] or _scale_of_dirname(sweep_dir.name, table)
    scale = meta["scale"] or "cpu"
    jobs = read_jobs(sweep_dir, spec["axis"], spec.get("row_format"))
    if not any(j.row is not None for j in jobs) and not (sweep_dir / "multirun.yaml").is_file():
        raise ValueError(f"{sweep_dir} is not a sweep of {table} (no multirun.yaml, no job of its rows); give the "
                         f"directory `make {table}` writes (outputs/sweeps/{table}_{scale}) or an experiment name")
    a = Analysis(table, spec, meta, sweep_dir, table_metric(spec, metric), [], [])
    try:
        a.prereg = find_prereg(table, scale, prereg_root)
    except PreregError as e:
        a.notes.append(str(e))
    registered = None
    if a.prereg is not None:
        a.metric = table_metric(spec, metric or a.prereg.metric)
        a.sha256, a.commit = file_sha256(a.prereg.path), commit_that_added(a.prereg.path)
        try:
            registered = registered_identities(a.prereg, spec["axis"])
        except Exception as e:  # noqa: BLE001 - a registration that no longer composes: say so, stay exploratory
            a.notes.append(f"the registered sweep does not compose today ({type(e).__name__}: {e})")
            registered = {}
    a.ledger = ledger_entries(table, scale, prereg_root)

    runs = {r.ran_as for r in empty_rows(spec, meta["scale"])}
    if jobs and not any(j.row in runs for j in jobs):
        found = sorted({str(j.row) for j in jobs})
        raise ValueError(f"none of the {len(jobs)} jobs under {sweep_dir} belongs to a row of {table} (its rows: "
                         f"{', '.join(sorted(map(str, runs)))}; the jobs' rows: {', '.join(found)}): pick the table "
                         "they ran with --table, or the sweep of this table")
    # Jobs still running are no results yet: their rows say so (rows.TableRow.status), and the report opens by
    # saying the table is incomplete (report.incomplete_note).
    a.running = [j for j in jobs if j.running]
    in_table = [j for j in jobs if j.row in runs]
    a.other = [j for j in jobs if j.row not in runs]
    for s in settings(in_table, spec["row_keys"]) or [Setting([], [])]:
        rows, duplicates = build_rows(spec, s, meta["scale"], a.metric)
        section = Section(s, rows, duplicates)
        reasons = (provenance(s.jobs, a.prereg, a.sha256, a.commit, registered, a.metric.key) if s.jobs else
                   ["no jobs"])
        section.claim = Claim(CONFIRMATORY if not reasons else EXPLORATORY, reasons)
        tests, contrasts = plan_tests(rows, a.prereg, _chance(s.jobs, a.metric), a.metric)
        section.tests, section.claim.contrasts = tests, contrasts
        section.claim.incomplete = missing_runs(rows, a.prereg if section.confirmatory else None)
        a.sections.append(section)
    others: list[float | None] = []
    others_text = ""
    if with_family and a.prereg is not None and any(s.confirmatory for s in a.sections):
        others, others_text = _family_others(a, prereg_root)
    for section in a.sections:
        everything = section.tests + section.claim.contrasts
        own = others if section.confirmatory else []
        decide(everything, own)
        section.claim.verdict = claim_verdict(everything, section.claim.incomplete)
        n = len(family_tests(everything)) + len(own)
        if section.confirmatory:
            section.claim.family = (f"Holm across the family `{a.prereg.family}`: {n} tests, this table's "
                                    f"{len(family_tests(everything))}" + (f" and {others_text}" if others_text else ""))
        else:
            section.claim.family = f"Holm within this table: {n} test{'s' if n != 1 else ''}"
        section.claim.ordering = _ordering(spec, section.claim.contrasts, section.rows)
    return a


def _table_of_dirname(name: str, tables: dict[str, dict]) -> str:
    """The table a sweep directory's name starts with (``htr_pos_embed_cpu`` -> ``htr_pos_embed``): the longest
    known table named so, else the name's first part (``table5_cpu`` -> ``table5``)."""
    named = [t for t in tables if name == t or name.startswith(t + "_")]
    return max(named, key=len) if named else name.split("_")[0]


def _scale_of_dirname(name: str, table: str) -> str | None:
    """The scale a sweep directory's name ends with (``<table>_<scale>``), where it has one."""
    if name.startswith(table + "_"):
        return name[len(table) + 1:]
    return name.split("_", 1)[1] if "_" in name else None


def _ordering(spec: dict, contrasts: list[Judgement], rows: list[TableRow]) -> str | None:
    ordering = spec.get("ordering")
    if not ordering:
        return None
    tested = [c for c in contrasts if c.name == ordering.get("contrast")]
    text = " ".join(ordering["claim"].split())
    if not tested:
        return f"{text}: not tested (no registered contrast `{ordering.get('contrast')}`)"
    c = tested[0]
    return f"{text}: tested by the registered contrast `{c.name}`, {c.verdict}" + _steps(rows, ordering.get("rows"))


def _steps(rows: list[TableRow], order: list[str] | None) -> str:
    """Each step of the claimed order, described (not tested): a trend contrast can agree while a step does not."""
    by_option = {r.option: r for r in rows}
    means = [(o, by_option[o].mean_std[0]) for o in order or [] if o in by_option]
    if len(means) < 2 or any(m is None for _, m in means):
        return ""
    steps = [f"{by_option[a].paper['row']} {ma:.2f} < {by_option[b].paper['row']} {mb:.2f}: "
             + ("yes" if mb > ma else "no") for (a, ma), (b, mb) in zip(means, means[1:])]
    return (". Each step, described, not tested (a trend contrast can agree while a step goes the other way): "
            + "; ".join(steps))


def _family_others(a: Analysis, root: Path) -> tuple[list[float | None], str]:
    """The raw p of the family's tests in other tables (None: not run or not confirmatory yet)."""
    others: list[float | None] = []
    parts = []
    for path in sorted(Path(root).glob("*.yaml")):
        if path.name == LEDGER:
            continue
        try:
            other = load_prereg(path)
        except PreregError:
            continue
        if other.family != a.prereg.family or other.scale != a.prereg.scale or other.table == a.table:
            continue
        sweep = a.sweep_dir.parent / f"{other.table}_{other.scale}"
        done = None
        if sweep.is_dir():
            try:
                result = analyse(sweep, other.table, metric=other.metric, prereg_root=root, with_family=False)
                done = next((s for s in result.sections if s.confirmatory), None)
            except (ValueError, FileNotFoundError):
                done = None
        if done is not None:
            ps = [j.p for j in family_tests(done.tests + done.claim.contrasts)]
            parts.append(f"{other.table}'s {len(ps)}")
        else:
            spec = load_paper_tables()[other.table]
            ps = [None] * (sum(1 for r in spec["rows"] if kind_of(r.get("expect")) in CORRECTED
                               and r["option"] in other.rows and r["option"] not in other.controls)
                           + len(other.contrasts))
            parts.append(f"{other.table}'s {len(ps)} (no confirmatory result yet: p = 1)")
        others += ps
    return others, ", ".join(parts)
