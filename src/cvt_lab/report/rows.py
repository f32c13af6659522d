"""The row model every rendering (markdown, CSV, plot) reads: one paper row beside ours, for one setting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cvt_lab.report.jobs import Job, Setting
from cvt_lab.report.metrics import METRICS, Metric
from cvt_lab.report.paper import has_paper, paper_config_size, scale_spec
from cvt_lab.report.stats import ItemOutcomes, RowSample, mean_ci

if TYPE_CHECKING:
    from cvt_lab.report.claims import Judgement


@dataclass
class Duplicate:
    """A job of the same row and seed (the same identity) as the one used."""

    job: Job
    used: Job


@dataclass
class TableRow:
    paper: dict  # the row of paper_tables.yaml
    ran_as: str  # the option run for this row (itself, or its stand-in at this scale)
    is_reference: bool = False
    metric: Metric = METRICS["test/acc1"]  # what the row's values are (the report's metric)
    values: dict[int, float] = field(default_factory=dict)  # seed -> ours in % (the report's metric)
    outcomes: dict[int, ItemOutcomes | None] = field(default_factory=dict)  # seed -> per-item outcomes
    described: dict[int, float] = field(default_factory=dict)  # seed -> the metric's companion in % (CER: WER)
    used: list[Job] = field(default_factory=list)  # the jobs behind ``accs`` and ``failed``
    failed: list[Job] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    not_run: str | None = None  # why this scale / sweep does not run the row
    params: float | None = None  # at the paper's configuration
    gmacs: float | None = None
    against: TableRow | None = None  # the row differences are taken from (the table's reference or the row's ``vs``)
    judgement: Judgement | None = None  # set by cvt_lab.report.claims.judge

    @property
    def option(self) -> str:
        return self.paper["option"]

    @property
    def mean_std(self) -> tuple[float | None, float | None]:
        return _mean_std(self.values)

    @property
    def described_mean_std(self) -> tuple[float | None, float | None]:
        return _mean_std(self.described)

    @property
    def sample(self) -> RowSample:
        seeds = sorted(self.values)
        return RowSample.of([self.values[k] for k in seeds], [self.outcomes.get(k) for k in seeds])

    @property
    def diff_ci(self) -> tuple[float | None, float | None, float | None]:
        """Our difference from the compared row and its interval at the judgement's level (None: none)."""
        j = self.judgement
        if j is None or j.estimate is None:
            return None, None, None
        return (j.estimate.value, *j.estimate.interval(j.level))

    @property
    def paper_diff(self) -> float | None:
        key = self.metric.column
        if self.against is None or self.paper.get(key) is None or self.against.paper.get(key) is None:
            return None
        return self.paper[key] - self.against.paper[key]

    @property
    def expect(self) -> str | None:
        """The expected sign of this row's difference (``+`` better, ``-`` worse, ``0``: none) or its
        non-inferiority claim (``not worse``, ``not better``), from ``expect`` in paper_tables.yaml."""
        return None if self.against is None else self.paper.get("expect")

    def vs_note(self, reference: TableRow | None) -> str:
        """`` vs <letter>`` for a row compared with another than the table's reference, else nothing."""
        return "" if self.against is None or self.against is reference else f" vs {self.against.paper['row']}"

    @property
    def verdict(self) -> str | None:
        return None if self.judgement is None else self.judgement.verdict

    @property
    def status(self) -> str:
        if self.not_run:
            return self.not_run
        running = sorted(j.seed for j in self.failed if j.status == "running")
        problems = [f"running seeds {running}"] if running else []
        problems += [f"failed seed {j.seed}: {one_line(j.error)}" for j in self.failed if j.status != "running"]
        problems += [f"missing seeds {self.missing}"] if self.missing else []
        return "; ".join(problems) or ("ok" if self.used else "no jobs")

    def record(self, spec: dict, setting: Setting, reference: TableRow | None) -> dict[str, Any]:
        """The row as the CSV writes it."""
        mean, sd = self.mean_std
        diff, low, high = self.diff_ci
        run = next((j for j in self.used if j.finished), None)
        key, companion = self.metric.column, self.metric.companion
        described = {}
        if companion:
            described_mean, described_sd = self.described_mean_std
            name = companion.split("/")[1]
            described = {f"ours_{name}_mean": described_mean, f"ours_{name}_std": described_sd}
        return {
            "row": self.paper["row"], "option": self.option, "ran_as": self.ran_as,
            "model": self.paper.get("model", ""),
            "description": self.paper["desc"], f"paper_{key}": self.paper.get(key),
            **{f"paper_{k}": self.paper.get(k) for k in spec.get("paper_columns") or {}},
            f"ours_{key}_mean": mean, f"ours_{key}_std": sd, **described, "n": len(self.values),
            "seeds": ",".join(str(s) for s in sorted(self.values)),
            "vs": self.against.option if self.against else None, "paper_diff": self.paper_diff, "ours_diff": diff,
            "ours_diff_ci_low": low, "ours_diff_ci_high": high, "expect": self.expect, "verdict": self.verdict,
            **(self.judgement.record() if self.judgement else {}),
            "paper_params_m": self.paper.get("params"), "ours_params_m": self.params,
            "paper_gmacs": self.paper.get("gmacs"), "ours_gmacs": self.gmacs,
            "run_model": run and run.model, "run_params": run and run.params, "status": self.status,
            "setting": setting.label, "identities": ",".join(j.identity or "-" for j in self.used),
        }


def one_line(text: str | None, limit: int = 300) -> str:
    """An error message fit for a table cell: one line, no pipes, at most ``limit`` characters."""
    text = " ".join((text or "unknown error").split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mean_std(values: dict[int, float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean, _, sd = mean_ci(list(values.values()))
    return mean, sd


def empty_rows(spec: dict, scale: str | None, metric: Metric = METRICS["test/acc1"]) -> list[TableRow]:
    """The table's rows at a scale: the paper's, each run as itself or its stand-in, and the scale's own."""
    at_scale = scale_spec(spec, scale) or {}
    stand_ins = at_scale.get("stand_ins") or {}
    return [TableRow(r, stand_ins.get(r["option"], r["option"]), r["option"] == spec.get("reference"), metric)
            for r in [*spec["rows"], *(at_scale.get("extra_rows") or [])]]


def build_rows(spec: dict, setting: Setting, scale: str | None,
               metric: Metric = METRICS["test/acc1"]) -> tuple[list[TableRow], list[Duplicate]]:
    """The table's rows from one setting's jobs, and the duplicates among them (same row and seed: one
    is used, the first finished in directory order; the others are listed, never dropped silently)."""
    at_scale = scale_spec(spec, scale) or {}
    stand_ins = at_scale.get("stand_ins") or {}
    extra_options = {r["option"] for r in at_scale.get("extra_rows") or []}
    rows = empty_rows(spec, scale, metric)
    by_run = {r.ran_as: r for r in rows}
    per_seed: dict[tuple[str, int | None], list[Job]] = {}
    for j in sorted(setting.jobs, key=lambda j: j.run_dir):
        if j.row in by_run:
            per_seed.setdefault((j.row, j.seed), []).append(j)
    duplicates = []
    for (row, seed), jobs in per_seed.items():
        used = next((j for j in jobs if j.finished), jobs[0])
        target = by_run[row]
        target.used.append(used)
        if used.finished and used.metric(metric.key) is not None:
            target.values[seed] = used.metric(metric.key)
            target.outcomes[seed] = used.outcomes(metric)
            if metric.companion and used.metric(metric.companion) is not None:
                target.described[seed] = used.metric(metric.companion)
        else:
            target.failed.append(used)
        duplicates += [Duplicate(j, used) for j in jobs if j is not used]
    for r in rows:
        if r.used:
            pass  # run (e.g. model=deit_s added on the command line), whatever the scale says
        elif r.paper.get("sweep") is False:
            r.not_run = f"not in this sweep: {r.paper.get('why', 'not run by the experiment')}"
        elif at_scale and r.option not in stand_ins and r.option not in extra_options:
            r.not_run = f"not run at {scale} scale"
        seen = {j.seed for j in r.used}
        r.missing = [] if r.not_run else [s for s in setting.seeds if s not in seen]
        r.params, r.gmacs = paper_config_size(spec, r.paper) if has_paper(spec) else (None, None)
    reference = next((r for r in rows if r.is_reference), None)
    if reference is not None:
        by_option = {r.option: r for r in rows}
        for r in rows:
            if r is not reference:
                r.against = by_option[r.paper["vs"]] if "vs" in r.paper else reference
    return rows, duplicates
