"""A table's claim judged from its rows: which comparisons are tests, the gates, Holm across the family,
the verdict per row and per claim, and whether a setting is confirmatory (cvt_lab.report.prereg).

Rules (docs/ablations.md, "The confirmation protocol"; the report prints them):

* A row with an expected sign (``+`` better / ``-`` worse, in the metric's direction: a lower CER is better) is a
  two-sided test of its difference from the row it is compared with; its p is Holm-adjusted across every test of
  the family that Holm corrects (signed rows, non-inferiority rows, contrasts; all tables registering the same
  family; a registered test whose table has no confirmatory result yet counts as p = 1, which only raises the
  others' adjusted p). An exploratory setting is corrected within its own table.
* A "no difference" row (``0``) is an equivalence test (TOST) against its registered margin; without one it is
  not judged. The claim needs every such row equivalent (an intersection-union test: no correction needed).
* A non-inferiority row (``not worse``: this row is not worse than the row it is compared with by more than its
  registered margin; ``not better``: that row is not worse than this one by more) is a one-sided test, one half
  of TOST; without a margin it is not judged. Each is a finding of its own (the width generalization of one
  stage's position embedding), so it is Holm-corrected with the family, as the signed tests are.
* Ordering claims are tested only through a registered contrast.
* Gates: a comparison whose compared-with row sits at the best end (a ceiling for accuracy, a floor for CER) or
  within the chance margin of chance is not judged (a gain cannot show, or nothing was learned), unless the row
  is a registered control. Controls are judged and printed, but are not part of the claim.
* A registered row with fewer finished seeds than registered makes the table incomplete: never "reproduces".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cvt_lab.report.metrics import METRICS, Metric
from cvt_lab.report.prereg import Prereg
from cvt_lab.report.rows import TableRow
from cvt_lab.report.stats import (AGREES, DIFFERS, DISAGREES, EQUIVALENT, INFERIOR, NONINFERIOR, NOT_BETTER,
                                  NOT_JUDGED, NOT_WORSE, Estimate, contrast, difference, equivalence_verdict, holm,
                                  noninferiority_p, noninferiority_verdict, signed_verdict)

DEFAULT_ALPHA, DEFAULT_CHANCE_MARGIN = 0.05, 5.0  # the ceiling's default is the metric's (cvt_lab.report.metrics)
CONFIRMATORY, EXPLORATORY = "confirmatory", "exploratory"
INCOMPLETE, NOT_TESTED = "incomplete", "not tested"
# A row's test from its ``expect`` in paper_tables.yaml; the kinds Holm corrects across the family.
KINDS = {"+": "signed", "-": "signed", "0": "equivalence", NOT_WORSE: "noninferiority", NOT_BETTER: "noninferiority"}
CORRECTED = ("signed", "noninferiority", "contrast")
WITH_MARGIN = ("equivalence", "noninferiority")


def kind_of(expect: str | None) -> str | None:
    """The test of a row expecting ``expect`` (None: the row is not part of the claim)."""
    if expect is None:
        return None
    if expect not in KINDS:
        raise ValueError(f"expect {expect!r}: one of {', '.join(repr(k) for k in KINDS)} "
                         "(experiments/paper_tables.yaml)")
    return KINDS[expect]


def has_noninferiority(spec: dict) -> bool:
    """Whether a table (paper_tables.yaml) has non-inferiority rows."""
    return any(kind_of(r.get("expect")) == "noninferiority" for r in spec["rows"])


@dataclass
class Judgement:
    """One test: a row against the row it is compared with, or a registered contrast."""

    name: str  # the row letter, or the contrast's name
    kind: str  # "signed" (+/-), "equivalence" (0), "noninferiority" (not worse / not better), "contrast"
    expect: str | None
    estimate: Estimate | None
    alpha: float
    margin: float | None = None  # equivalence or non-inferiority margin (points)
    paper_effect: float | None = None  # the paper's difference (points), where it has one
    p: float | None = None  # raw p: two-sided (signed, contrast), TOST (equivalence), one-sided (non-inferiority)
    p_adjusted: float | None = None  # Holm across the family (signed, non-inferiority, contrast)
    verdict: str = NOT_JUDGED
    why_not: str | None = None  # why it is not judged
    control: bool = False
    higher_is_better: bool = True  # the metric's direction: which sign of a difference is "better"

    @property
    def level(self) -> float:
        """The interval printed: 1 - alpha; for an equivalence or non-inferiority test 1 - 2 alpha (the interval
        whose ends TOST and its halves compare with the margin)."""
        return 1 - 2 * self.alpha if self.kind in WITH_MARGIN else 1 - self.alpha

    @property
    def ratio(self) -> float | None:
        """Our effect over the paper's (how much of it a scale shows)."""
        if self.estimate is None or not self.paper_effect:
            return None
        return self.estimate.value / self.paper_effect

    @property
    def corrected(self) -> bool:
        """Whether Holm corrects this kind of test across the family."""
        return self.kind in CORRECTED

    def record(self) -> dict[str, Any]:
        return {"test": self.kind, "p": self.p, "p_holm": self.p_adjusted, "margin": self.margin,
                "ci_level": self.level, "test_set_noise": self.estimate.test_set if self.estimate else None,
                "effect_ratio": self.ratio, "control": self.control, "not_judged_why": self.why_not}


@dataclass
class Claim:
    """A setting's answer: its label (confirmatory / exploratory, with reasons) and the verdict on its claim."""

    label: str
    reasons: list[str] = field(default_factory=list)  # why exploratory
    verdict: str | None = None  # reproduces / does not reproduce / not shown / not tested / incomplete
    contrasts: list[Judgement] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    family: str | None = None  # how many tests Holm corrected together, and which
    ordering: str | None = None  # the table's ordering claim and how (whether) it was tested


def _gate(row: TableRow, chance: float | None, ceiling: float, chance_margin: float, metric: Metric) -> str | None:
    mean, _ = row.mean_std
    if mean is None:
        return None
    if metric.is_at_best_end(mean, ceiling):
        if metric.higher_is_better:
            return f"row {row.paper['row']} at the ceiling ({mean:.2f}% >= {ceiling:g}%)"
        return f"row {row.paper['row']} at the floor ({metric.label} {mean:.2f}% <= {ceiling:g}%)"
    if chance is not None and metric.is_near_chance(mean, chance, chance_margin):
        if metric.higher_is_better:
            return f"row {row.paper['row']} at chance ({mean:.2f}% within {chance_margin:g} points of {chance:.2f}%)"
        # a CER can pass chance (100%: insertions), so "within" would misread it
        return (f"row {row.paper['row']} at chance ({metric.label} {mean:.2f}% >= {chance - chance_margin:g}%: "
                f"within {chance_margin:g} points of {chance:g}% or past it)")
    return None


def plan_tests(rows: list[TableRow], prereg: Prereg | None, chance: float | None,
               metric: Metric = METRICS["test/acc1"]) -> tuple[list[Judgement], list[Judgement]]:
    """Every row's test and every registered contrast, estimated, with raw p; verdicts come from :func:`decide`."""
    alpha = prereg.alpha if prereg else DEFAULT_ALPHA
    ceiling = prereg.ceiling if prereg and prereg.ceiling is not None else metric.default_ceiling
    chance_margin = prereg.chance_margin if prereg else DEFAULT_CHANCE_MARGIN
    controls = set(prereg.controls) if prereg else set()
    row_tests = []
    for r in rows:
        r.judgement = None
        if r.expect is None or r.against is None:
            continue
        estimate = difference(r.sample, r.against.sample)
        kind = kind_of(r.expect)
        j = Judgement(r.paper["row"], kind, r.expect, estimate, alpha, paper_effect=r.paper_diff,
                      control=r.option in controls, higher_is_better=metric.higher_is_better)
        if estimate is None:
            j.why_not = "fewer than two seeds in a row compared"
        elif not j.control:
            j.why_not = _gate(r.against, chance, ceiling, chance_margin, metric)
        if kind in WITH_MARGIN:
            j.margin = (prereg.margins.get(r.option) if prereg else None)
            if j.margin is None and j.why_not is None:
                j.why_not = f"no registered {'equivalence' if kind == 'equivalence' else 'non-inferiority'} margin"
            if estimate is not None and j.margin is not None:
                j.p = (estimate.tost_p(j.margin) if kind == "equivalence" else
                       noninferiority_p(estimate, j.margin, r.expect, metric.higher_is_better))
        elif estimate is not None:
            j.p = estimate.p_value
        r.judgement = j
        row_tests.append(j)
    contrasts = []
    by_option = {r.option: r for r in rows}
    for c in prereg.contrasts if prereg else []:
        members = [by_option.get(o) for o in c.weights]
        if any(m is None for m in members):
            j = Judgement(c.name, "contrast", c.expect, None, alpha, higher_is_better=metric.higher_is_better,
                          why_not="a row of the contrast is not in the table")
        else:
            estimate = contrast([m.sample for m in members], list(c.weights.values()))
            j = Judgement(c.name, "contrast", c.expect, estimate, alpha, higher_is_better=metric.higher_is_better,
                          p=None if estimate is None else estimate.p_value)
            gated = [g for m in members if (g := _gate(m, chance, ceiling, chance_margin, metric))]
            j.why_not = "fewer than two seeds in a row" if estimate is None else (gated[0] if gated else None)
        contrasts.append(j)
    return row_tests, contrasts


def family_tests(tests: list[Judgement]) -> list[Judgement]:
    """The tests Holm corrects: signed rows, non-inferiority rows and contrasts that are part of the claim and
    judged."""
    return [j for j in tests if j.corrected and not j.control and j.why_not is None and j.p is not None]


def decide(tests: list[Judgement], others: list[float | None] = ()) -> None:
    """Holm-adjust the family (``tests``' corrected ones plus ``others``: the rest of the family's raw p, None for
    a test not run yet, counted as 1) and set every verdict."""
    family = family_tests(tests)
    raw = [j.p for j in family] + [1.0 if p is None else p for p in others]
    adjusted = holm(raw) if raw else []
    for j, p_adj in zip(family, adjusted):
        j.p_adjusted = p_adj
    for j in tests:
        if j.why_not is not None:
            j.verdict = NOT_JUDGED
        elif j.kind == "equivalence":
            j.verdict = equivalence_verdict(j.estimate, j.margin, j.alpha)
        else:  # a control is judged alone: it checks the design, it is not corrected with the claim
            p = j.p if j.control else j.p_adjusted
            if j.kind == "noninferiority":
                j.verdict = noninferiority_verdict(j.expect, j.estimate, j.margin, p, j.alpha, j.higher_is_better)
            else:
                j.verdict = signed_verdict(j.expect, j.estimate, p, j.alpha, j.higher_is_better)


def claim_verdict(tests: list[Judgement], incomplete: list[str]) -> str:
    """The claim's verdict from its tests (controls left out)."""
    parts = [j for j in tests if not j.control]
    if incomplete:
        return INCOMPLETE
    if not parts or all(j.verdict == NOT_JUDGED for j in parts):
        return NOT_TESTED
    if any(j.verdict in (DISAGREES, DIFFERS, INFERIOR) for j in parts):
        return "does not reproduce"
    if all(j.verdict in (AGREES, EQUIVALENT, NONINFERIOR) for j in parts):
        return "reproduces"
    return "not shown"


def missing_runs(rows: list[TableRow], prereg: Prereg | None) -> list[str]:
    """What the table lacks to be complete: registered rows x seeds not finished (or, without a registration,
    rows of the claim with fewer than two finished seeds or with missing / failed seeds)."""
    out = []
    for r in rows:
        if r.not_run:
            continue
        if prereg is not None:
            if r.option not in prereg.rows:
                continue
            lacking = sorted(set(prereg.seeds) - set(r.values))
            if lacking:
                out.append(f"row {r.paper['row']} ({r.option}): seeds {lacking} not finished")
        elif r.expect is not None or r.is_reference or any(x.against is r for x in rows):
            if len(r.values) < 2 or r.missing or r.failed:
                out.append(f"row {r.paper['row']} ({r.option}): {len(r.values)} finished seed(s)"
                           + (f", {r.status}" if r.status != "ok" else ""))
    return out
