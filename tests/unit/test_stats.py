"""cvt_lab.report.stats and .claims: intervals over seeds and test images, TOST, Holm, gates and claim verdicts,
checked against scipy / statsmodels where a reference implementation exists."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from cvt_lab.report.claims import Judgement, claim_verdict, decide
from cvt_lab.report.stats import (AGREES, DIFFERS, DISAGREES, EQUIVALENT, NOT_JUDGED, NOT_SEPARATED, NOT_SHOWN,
                                  Estimate, RowSample, contrast, difference, equivalence_verdict, holm, mean_ci,
                                  seeds_for, signed_verdict)


def rows_with_outcomes(per_seed_correct: list[np.ndarray]) -> RowSample:
    return RowSample.of([100 * o.mean() for o in per_seed_correct], per_seed_correct)


def test_mean_ci():
    m, half, sd = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and sd == 1.0 and half == pytest.approx(4.303 * 1 / math.sqrt(3), rel=1e-3)
    assert mean_ci([5.0]) == (5.0, None, None)


def test_without_test_set_noise_the_difference_is_welchs_test():
    """No per-image outcomes and no test-set size: the interval and p are Welch's, as scipy computes them."""
    a, b = [90.1, 91.3, 90.7, 92.0], [88.0, 89.9, 88.6]
    est = difference(RowSample.of(a), RowSample.of(b))
    ref = sps.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert est.test_set == "none"
    assert est.value == pytest.approx(np.mean(a) - np.mean(b))
    assert est.interval(0.95) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert est.p_value == pytest.approx(ref.pvalue)


def test_tost_matches_statsmodels():
    from statsmodels.stats.weightstats import ttost_ind

    a, b = [55.2, 57.1, 54.8, 56.0, 55.5], [56.1, 55.0, 57.3, 54.2, 56.6]
    est = difference(RowSample.of(a), RowSample.of(b))
    for margin in (1.0, 2.5, 5.0):
        p_ref, _, _ = ttost_ind(a, b, -margin, margin, usevar="unequal")
        assert est.tost_p(margin) == pytest.approx(p_ref, rel=1e-6)


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.0001, 0.049]
    _, ref, _, _ = multipletests(p, method="holm")
    assert holm(p) == pytest.approx(list(ref))
    assert holm([]) == []


def test_rows_that_never_vary_still_get_an_interval_of_nonzero_width():
    """Zero seed variance on both sides (every seed right on every image): the test set still leaves room."""
    n = 360
    perfect = [np.ones(n, bool)] * 3
    est = difference(rows_with_outcomes(perfect), rows_with_outcomes(perfect))
    low, high = est.interval(0.95)
    assert est.test_set == "paired" and est.value == 0 and low < -0.5 and high > 0.5


def test_one_test_image_does_not_separate_two_constant_rows():
    """Two rows identical on every seed but for one test image: not separated (the old Welch interval had zero
    width and called it a disagreement)."""
    n = 360
    a = np.ones(n, bool)
    b = a.copy()
    b[7] = False
    est = difference(rows_with_outcomes([a, a, a]), rows_with_outcomes([b, b, b]))
    assert est.value == pytest.approx(100 / n)
    assert signed_verdict("-", est, est.p_value, 0.05) == NOT_SEPARATED


def test_paired_test_set_part_is_the_variance_of_per_image_differences():
    rng = np.random.default_rng(0)
    n, k = 200, 3
    a = [rng.random(n) < 0.7 for _ in range(k)]
    b = [rng.random(n) < 0.6 for _ in range(k)]
    est = difference(rows_with_outcomes(a), rows_with_outcomes(b))
    d = 100 * (np.mean(a, axis=0) - np.mean(b, axis=0))
    within = sum(1e4 * np.mean(x.mean(axis=0) * (1 - x.mean(axis=0)) * k / (k - 1)) / k
                 for x in (np.array(a), np.array(b)))
    image_var = np.var(np.concatenate([d, [100, -100]]), ddof=1) / (n + 2) - within / (n + 2)
    seed_var = sum(np.var([100 * x.mean() for x in row], ddof=1) / k for row in (a, b))
    assert est.se == pytest.approx(math.sqrt(image_var + seed_var))


def test_binomial_fallback_without_outcomes_is_wider_than_none():
    with_n = difference(RowSample((80.0, 80.0, 80.0), None, 300), RowSample((70.0, 70.0, 70.0), None, 300))
    assert with_n.test_set == "binomial" and with_n.se > 0
    assert difference(RowSample.of([80.0, 80.0]), RowSample.of([70.0, 70.0])) is None  # nothing to base it on


def test_one_seed_gives_no_estimate_and_no_verdict():
    one = RowSample.of([90.0], [np.ones(10, bool)])
    two = RowSample.of([80.0, 81.0], [np.ones(10, bool), np.ones(10, bool)])
    assert difference(one, two) is None
    assert signed_verdict("+", None, None, 0.05) == NOT_JUDGED
    assert equivalence_verdict(None, 2.0, 0.05) == NOT_JUDGED


@pytest.mark.parametrize("value, se, margin, answer", [
    (0.2, 0.5, 2.0, EQUIVALENT), (3.0, 0.5, 2.0, DIFFERS), (0.5, 3.0, 2.0, NOT_SHOWN), (1.5, 0.2, 2.0, EQUIVALENT),
])
def test_equivalence_verdicts(value, se, margin, answer):
    assert equivalence_verdict(Estimate(value, se, 20.0, "paired"), margin, 0.05) == answer


@pytest.mark.parametrize("expect, value, p, answer", [
    ("+", 2.0, 0.01, AGREES), ("+", -2.0, 0.01, DISAGREES), ("+", 2.0, 0.2, NOT_SEPARATED),
    ("-", -2.0, 0.01, AGREES), ("-", 2.0, 0.01, DISAGREES),
])
def test_signed_verdicts(expect, value, p, answer):
    assert signed_verdict(expect, Estimate(value, 1.0, 10.0, "paired"), p, 0.05) == answer


def test_contrast_weights_generalise_the_difference():
    a, b = RowSample.of([70.0, 72.0, 71.0]), RowSample.of([60.0, 61.0, 62.0])
    d, c = difference(a, b), contrast([a, b], [1.0, -1.0])
    assert (c.value, c.se, c.df) == (pytest.approx(d.value), pytest.approx(d.se), pytest.approx(d.df))


def test_holm_family_and_claim_verdicts():
    """Two signed tests, one clearly significant, one only before correction; the other tables' tests count."""
    strong = Judgement("a", "signed", "-", Estimate(-10.0, 1.0, 30.0, "paired"), 0.05, p=1e-6)
    weak = Judgement("b", "signed", "-", Estimate(-2.0, 0.9, 30.0, "paired"), 0.05, p=0.034)
    decide([strong, weak], others=[0.2, None])  # two tests of other tables: one run, one not (p = 1)
    assert weak.p_adjusted == pytest.approx(min(1.0, 3 * 0.034))
    assert strong.verdict == AGREES and weak.verdict == NOT_SEPARATED
    assert claim_verdict([strong, weak], []) == "not shown"
    assert claim_verdict([strong], []) == "reproduces"
    assert claim_verdict([strong, weak], ["row f (none): seeds [102] not finished"]) == "incomplete"


def test_a_claim_with_nothing_judged_is_not_tested_never_reproduced():
    """The old bug: all([]) read as "reproduces" when no row had a verdict."""
    unjudged = Judgement("c", "equivalence", "0", None, 0.05, why_not="fewer than two seeds in a row compared")
    decide([unjudged])
    assert unjudged.verdict == NOT_JUDGED
    assert claim_verdict([unjudged], []) == "not tested"
    assert claim_verdict([], []) == "not tested"


def test_controls_are_judged_alone_and_stay_out_of_the_claim():
    control = Judgement("b", "signed", "-", Estimate(-50.0, 2.0, 10.0, "paired"), 0.05, p=1e-8, control=True)
    claim = Judgement("c", "equivalence", "0", Estimate(0.3, 0.6, 12.0, "paired"), 0.05, margin=3.0)
    claim.p = claim.estimate.tost_p(3.0)
    decide([control, claim])
    assert control.p_adjusted is None and control.verdict == AGREES
    assert claim.verdict == EQUIVALENT and claim_verdict([control, claim], []) == "reproduces"


def test_seeds_sized_from_pilot_spread():
    assert seeds_for(sd=1.0, half_width=5.0) == 2
    k = seeds_for(sd=3.0, half_width=4.0)
    assert sps.t.ppf(0.975, 2 * k - 2) * 3.0 * math.sqrt(2 / k) <= 4.0
    assert sps.t.ppf(0.975, 2 * k - 4) * 3.0 * math.sqrt(2 / (k - 1)) > 4.0
