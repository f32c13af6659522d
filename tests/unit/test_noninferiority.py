"""cvt_lab.report.stats and .claims for lower-is-better metrics and non-inferiority: the one-sided test against
statsmodels, its direction for CER, its verdicts, its place in Holm's family, and the CER's paired test-set part."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvt_lab.report.claims import Judgement, claim_verdict, decide, family_tests
from cvt_lab.report.metrics import METRICS
from cvt_lab.report.stats import (AGREES, DISAGREES, INFERIOR, NONINFERIOR, NOT_BETTER, NOT_SHOWN, NOT_WORSE,
                                  Estimate, ItemOutcomes, RowSample, difference, noninferiority_p,
                                  noninferiority_verdict, signed_verdict)

A, B = [55.2, 57.1, 54.8, 56.0, 55.5], [56.1, 55.0, 57.3, 54.2, 56.6]


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.5])
def test_one_sided_tests_are_the_halves_of_statsmodels_tost(margin):
    """Without test-set noise the estimate is Welch's: each one-sided p is one half of ttost_ind's, and
    ttest_ind's with value= and alternative=."""
    from statsmodels.stats.weightstats import ttest_ind, ttost_ind

    est = difference(RowSample.of(A), RowSample.of(B))
    _, (_, p_lower, _), (_, p_upper, _) = ttost_ind(A, B, -margin, margin, usevar="unequal")
    assert est.p_above(-margin) == pytest.approx(p_lower, rel=1e-6)
    assert est.p_below(margin) == pytest.approx(p_upper, rel=1e-6)
    assert est.p_above(-margin) == pytest.approx(
        ttest_ind(A, B, alternative="larger", usevar="unequal", value=-margin)[1], rel=1e-6)
    assert est.p_below(margin) == pytest.approx(
        ttest_ind(A, B, alternative="smaller", usevar="unequal", value=margin)[1], rel=1e-6)
    assert est.tost_p(margin) == pytest.approx(ttost_ind(A, B, -margin, margin, usevar="unequal")[0], rel=1e-6)


def test_noninferiority_follows_the_metrics_direction():
    """d = this row minus the other. Accuracy: "not worse" bounds d from below (d > -m); CER, where a higher
    value is worse: from above (d < +m). "not better" is the mirror of each."""
    from statsmodels.stats.weightstats import ttest_ind

    est, m = difference(RowSample.of(A), RowSample.of(B)), 1.5
    larger = ttest_ind(A, B, alternative="larger", usevar="unequal", value=-m)[1]  # H1: d > -m
    smaller = ttest_ind(A, B, alternative="smaller", usevar="unequal", value=m)[1]  # H1: d < +m
    assert noninferiority_p(est, m, NOT_WORSE, higher_is_better=True) == pytest.approx(larger, rel=1e-6)
    assert noninferiority_p(est, m, NOT_BETTER, higher_is_better=True) == pytest.approx(smaller, rel=1e-6)
    assert noninferiority_p(est, m, NOT_WORSE, higher_is_better=False) == pytest.approx(smaller, rel=1e-6)
    assert noninferiority_p(est, m, NOT_BETTER, higher_is_better=False) == pytest.approx(larger, rel=1e-6)
    with pytest.raises(ValueError, match="margin"):
        noninferiority_p(est, 0.0, NOT_WORSE)


@pytest.mark.parametrize("value, expect, answer", [
    # d = this row's CER minus the reference's, margin 1; "not better": the reference is not worse than this row
    (0.2, NOT_BETTER, NONINFERIOR),  # the reference's CER lower by 0.2: not worse
    (-3.0, NOT_BETTER, INFERIOR),  # the reference's CER 3 points higher, the whole 90% interval beyond the margin
    (-0.8, NOT_BETTER, NOT_SHOWN),  # 0.8 higher, the interval reaching past the margin
    (-3.0, NOT_WORSE, NONINFERIOR),  # this row's CER 3 points lower: not worse
    (3.0, NOT_WORSE, INFERIOR),
])
def test_noninferiority_verdicts_on_cer(value, expect, answer):
    est = Estimate(value, 0.5, 20.0, "paired")
    p = noninferiority_p(est, 1.0, expect, higher_is_better=False)
    assert noninferiority_verdict(expect, est, 1.0, p, 0.05, higher_is_better=False) == answer


def test_signed_verdicts_read_a_lower_cer_as_better():
    lower = Estimate(-2.0, 0.5, 20.0, "paired")  # this row's CER 2 points below the other's
    assert signed_verdict("+", lower, 0.001, 0.05, higher_is_better=False) == AGREES
    assert signed_verdict("-", lower, 0.001, 0.05, higher_is_better=False) == DISAGREES
    assert signed_verdict("+", lower, 0.001, 0.05) == DISAGREES  # the same numbers as accuracy: worse


def test_noninferiority_tests_are_in_holms_family():
    ni = Judgement("b", "noninferiority", NOT_BETTER, Estimate(0.1, 0.3, 20.0, "paired"), 0.05, margin=1.0,
                   higher_is_better=False)
    ni.p = noninferiority_p(ni.estimate, 1.0, NOT_BETTER, higher_is_better=False)
    signed = Judgement("c", "signed", "-", Estimate(4.0, 1.0, 20.0, "paired"), 0.05, p=0.0004, higher_is_better=False)
    equivalence = Judgement("d", "equivalence", "0", Estimate(0.1, 0.3, 20.0, "paired"), 0.05, margin=1.0, p=0.01)
    assert family_tests([ni, signed, equivalence]) == [ni, signed]  # TOST stays outside: an intersection-union test
    decide([ni, signed, equivalence], others=[None])  # a third test of the family, not run yet: p = 1
    assert ni.p_adjusted == pytest.approx(min(1.0, 2 * ni.p))  # Holm: the smaller of the two others is first
    assert ni.verdict == NONINFERIOR and signed.verdict == AGREES
    assert claim_verdict([ni, signed, equivalence], []) == "reproduces"
    ni.verdict = INFERIOR
    assert claim_verdict([ni, signed], []) == "does not reproduce"


def cer_row(edits: list[np.ndarray], chars: np.ndarray) -> RowSample:
    """A CER row from per-seed edit counts on the same lines, as the report builds it."""
    metric = METRICS["test/cer"]
    outcomes = [metric.item_outcomes({"test_edits": e, "test_chars": chars}) for e in edits]
    return RowSample.of([100 * e.sum() / chars.sum() for e in edits], outcomes)


def test_a_lines_share_averages_to_the_cer_and_bounds_every_line():
    chars = np.array([10, 12, 9, 11])
    edits = np.array([0, 14, 1, 2])  # line 2: insertions, more edits than characters
    item = METRICS["test/cer"].item_outcomes({"test_edits": edits, "test_chars": chars})
    assert 100 * item.values.mean() == pytest.approx(100 * edits.sum() / chars.sum())
    assert item.bound == pytest.approx(item.values.max()) and item.bound > 4 * 12 / chars.sum()
    clean = METRICS["test/cer"].item_outcomes({"test_edits": np.zeros(4, int), "test_chars": chars})
    assert clean.bound == pytest.approx(4 * 12 / chars.sum())  # a longest line read entirely wrong
    assert METRICS["test/cer"].item_outcomes({"test": edits == 0}) is None  # an older run: exact matches only


def test_cer_rows_that_read_every_line_right_still_get_an_interval():
    chars = np.full(300, 10)
    perfect = [np.zeros(300, int)] * 3
    est = difference(cer_row(perfect, chars), cer_row(perfect, chars))
    low, high = est.interval(0.95)
    assert est.test_set == "paired" and est.value == 0 and low < -0.3 and high > 0.3


def test_paired_cer_test_set_part_is_the_variance_of_per_line_differences():
    rng = np.random.default_rng(1)
    n, k = 200, 3
    chars = rng.integers(8, 13, n)
    a = [rng.binomial(chars, 0.05) for _ in range(k)]
    b = [rng.binomial(chars, 0.08) for _ in range(k)]
    est = difference(cer_row(a, chars), cer_row(b, chars))
    share = [np.array([e * n / chars.sum() for e in row]) for row in (a, b)]  # (k, n) per row
    d = 100 * (share[0].mean(axis=0) - share[1].mean(axis=0))
    bound = max(n * chars.max() / chars.sum(), max(s.max() for s in share))
    c = 100 * bound
    within = sum(1e4 * np.mean(np.var(s, axis=0, ddof=1)) / k for s in share)
    line_var = max(np.var(np.concatenate([d, [c, -c]]), ddof=1) / (n + 2) - within / (n + 2),
                   2 * c * c / (n + 1) / (n + 2))
    seed_var = sum(np.var([100 * e.sum() / chars.sum() for e in row], ddof=1) / k for row in (a, b))
    assert est.value == pytest.approx(d.mean())
    assert est.se == pytest.approx(math.sqrt(line_var + seed_var))


def test_outcomes_of_both_kinds_do_not_mix():
    """Correctness stays boolean (the committed reports' numbers), shares are floats."""
    bools = RowSample.of([50.0, 50.0], [np.array([True, False]), np.array([False, True])])
    shares = RowSample.of([10.0, 20.0], [ItemOutcomes(np.array([0.1, 0.1])), ItemOutcomes(np.array([0.3, 0.1]))])
    assert bools.outcomes.dtype == bool and bools.outcome_bound == 1.0
    assert shares.outcomes.dtype == np.float64
