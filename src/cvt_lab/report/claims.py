"""A table's claim judged from its rows: which comparisons are tests, the gates, Holm across the family,
the verdict per row and per claim, and whether a setting is confirmatory (cvt_lab.report.prereg).

Rules (docs/ablations.md, "The confirmation protocol"; the report prints them):

* A row with a paper sign (``+``/``-``) is a two-sided test of its difference from the row it is compared with;
  its p is Holm-adjusted across every signed test of the family (all tables registering the same family;
  a registered test whose table has no confirmatory result yet counts as p = 1, which only raises the others'
  adjusted p). An exploratory setting is corrected within its own table.
* A "no difference" row (``0``) is an equivalence test (TOST) against its registered margin; without one it is
  not judged. The claim needs every such row equivalent (an intersection-union test: no correction needed).
* Ordering claims are tested only through a registered contrast.
* Gates: a comparison whose compared-with row sits at the ceiling or within the chance margin of chance is not
  judged (a gain cannot show, or nothing was learned), unless the row is a registered control. Controls are
  judged and printed, but are not part of the claim.
* A registered row with fewer finished seeds than registered makes the table incomplete: never "reproduces".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cvt_lab.report.prereg import Prereg
from cvt_lab.report.rows import TableRow
from cvt_lab.report.stats import (AGREES, DIFFERS, DISAGREES, EQUIVALENT, NOT_JUDGED, Estimate, contrast, difference,
                                  equivalence_verdict, holm, signed_verdict)

DEFAULT_ALPHA, DEFAULT_CEILING, DEFAULT_CHANCE_MARGIN = 0.05, 97.0, 5.0
CONFIRMATORY, EXPLORATORY = "confirmatory", "exploratory"
INCOMPLETE, NOT_TESTED = "incomplete", "not tested"


@dataclass
class Judgement:
    """One test: a row against the row it is compared with, or a registered contrast."""

    name: str  # the row letter, or the contrast's name
    kind: str  # "signed" (+/-), "equivalence" (0), "contrast"
    expect: str | None
    estimate: Estimate | None
    alpha: float
    margin: float | None = None  # equivalence margin (points)
    paper_effect: float | None = None  # the paper's difference (points), where it has one
    p: float | None = None  # raw two-sided p (signed, contrast) or TOST p (equivalence)
    p_adjusted: float | None = None  # Holm across the family (signed, contrast)
    verdict: str = NOT_JUDGED
    why_not: str | None = None  # why it is not judged
    control: bool = False

    @property
    def level(self) -> float:
        """The interval printed: 1 - alpha; for an equivalence test 1 - 2 alpha (what TOST compares)."""
        return 1 - 2 * self.alpha if self.kind == "equivalence" else 1 - self.alpha

    @property
    def ratio(self) -> float | None:
        """Our effect over the paper's (how much of it a scale shows)."""
        if self.estimate is None or not self.paper_effect:
            return None
        return self.estimate.value / self.paper_effect

    @property
    def signed(self) -> bool:
        return self.kind in ("signed", "contrast")

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


def _gate(row: TableRow, chance: float | None, ceiling: float, chance_margin: float) -> str | None:
    mean, _ = row.mean_std
    if mean is None:
        return None
    if mean >= ceiling:
        return f"row {row.paper['row']} at the ceiling ({mean:.2f}% >= {ceiling:g}%)"
    if chance is not None and mean <= chance + chance_margin:
        return f"row {row.paper['row']} at chance ({mean:.2f}% within {chance_margin:g} points of {chance:.2f}%)"
    return None


def plan_tests(rows: list[TableRow], prereg: Prereg | None, chance: float | None) -> tuple[list[Judgement],
                                                                                           list[Judgement]]:
    """Every row's test and every registered contrast, estimated, with raw p; verdicts come from :func:`decide`."""
    alpha = prereg.alpha if prereg else DEFAULT_ALPHA
    ceiling = prereg.ceiling if prereg else DEFAULT_CEILING
    chance_margin = prereg.chance_margin if prereg else DEFAULT_CHANCE_MARGIN
    controls = set(prereg.controls) if prereg else set()
    row_tests = []
    for r in rows:
        r.judgement = None
        if r.expect is None or r.against is None:
            continue
        estimate = difference(r.sample, r.against.sample)
        kind = "equivalence" if r.expect == "0" else "signed"
        j = Judgement(r.paper["row"], kind, r.expect, estimate, alpha, paper_effect=r.paper_diff,
                      control=r.option in controls)
        if estimate is None:
            j.why_not = "fewer than two seeds in a row compared"
        elif not j.control:
            j.why_not = _gate(r.against, chance, ceiling, chance_margin)
        if kind == "equivalence":
            j.margin = (prereg.margins.get(r.option) if prereg else None)
            if j.margin is None and j.why_not is None:
                j.why_not = "no registered equivalence margin"
            if estimate is not None and j.margin is not None:
                j.p = estimate.tost_p(j.margin)
        elif estimate is not None:
            j.p = estimate.p_value
        r.judgement = j
        row_tests.append(j)
    contrasts = []
    by_option = {r.option: r for r in rows}
    for c in prereg.contrasts if prereg else []:
        members = [by_option.get(o) for o in c.weights]
        if any(m is None for m in members):
            j = Judgement(c.name, "contrast", c.expect, None, alpha,
                          why_not="a row of the contrast is not in the table")
        else:
            estimate = contrast([m.sample for m in members], list(c.weights.values()))
            j = Judgement(c.name, "contrast", c.expect, estimate, alpha,
                          p=None if estimate is None else estimate.p_value)
            gated = [g for m in members if (g := _gate(m, chance, ceiling, chance_margin))]
            j.why_not = "fewer than two seeds in a row" if estimate is None else (gated[0] if gated else None)
        contrasts.append(j)
    return row_tests, contrasts


def family_tests(tests: list[Judgement]) -> list[Judgement]:
    """The tests Holm corrects: signed rows and contrasts that are part of the claim and judged."""
    return [j for j in tests if j.signed and not j.control and j.why_not is None and j.p is not None]


def decide(tests: list[Judgement], others: list[float | None] = ()) -> None:
    """Holm-adjust the family (``tests``' signed ones plus ``others``: the rest of the family's raw p, None for
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
        elif j.control:  # judged alone: a control checks the design, it is not corrected with the claim
            j.verdict = signed_verdict(j.expect, j.estimate, j.p, j.alpha)
        else:
            j.verdict = signed_verdict(j.expect, j.estimate, j.p_adjusted, j.alpha)


def claim_verdict(tests: list[Judgement], incomplete: list[str]) -> str:
    """The claim's verdict from its tests (controls left out)."""
    parts = [j for j in tests if not j.control]
    if incomplete:
        return INCOMPLETE
    if not parts or all(j.verdict == NOT_JUDGED for j in parts):
        return NOT_TESTED
    if any(j.verdict in (DISAGREES, DIFFERS) for j in parts):
        return "does not reproduce"
    if all(j.verdict in (AGREES, EQUIVALENT) for j in parts):
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
            lacking = sorted(set(prereg.seeds) - set(r.accs))
            if lacking:
                out.append(f"row {r.paper['row']} ({r.option}): seeds {lacking} not finished")
        elif r.expect is not None or r.is_reference or any(x.against is r for x in rows):
            if len(r.accs) < 2 or r.missing or r.failed:
                out.append(f"row {r.paper['row']} ({r.option}): {len(r.accs)} finished seed(s)"
                           + (f", {r.status}" if r.status != "ok" else ""))
    return out
