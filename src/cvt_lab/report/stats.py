"""The statistics of a table's rows: estimates of row contrasts whose uncertainty counts both the seeds and the
finite test set, two-sided, equivalence (TOST) and non-inferiority (one half of TOST) tests, and Holm's correction
across a family of tests.

A row is a set of runs (one per seed) evaluated on the same test items. Its metric in % (top-1 accuracy, higher is
better; or CER, lower is better) varies with the seed (training noise) and, for a claim about the data distribution
rather than this test set, with the test set drawn (test-set noise). Every run's metric is the mean over the test
items of a per-item outcome ``o_i`` (in fractions; :class:`ItemOutcomes`): for accuracy ``o_i`` is 1 when image i is
right, 0 when wrong; for a line recognizer's CER it is the line's share ``o_i = edits_i * n / N`` (``edits_i`` the
line's character edit distance, ``N`` the test set's characters, ``n`` its lines), so that ``mean_i o_i =
sum_i edits_i / N``, the CER, and a row's CER is the mean over lines of ``s_i = 100 * o_i`` as its accuracy is the
mean of ``100 * correct_i``. For a contrast ``sum_r w_r * mean_r`` (a difference of two rows: ``w = (+1, -1)``) the
variance is the sum of

* the seed part, ``sum_r w_r**2 * s_r**2 / k_r`` (``s_r`` the std over the row's ``k_r`` seeds: Welch), and
* the test-set part, ``var_i(D_i) / n`` with ``D_i = sum_r w_r * a_ri`` and ``a_ri = 100 * mean over row r's seeds
  of o_i`` (accuracy: the share of seeds that got image i right, in %): the rows are paired over items (the same
  test items in the same order for every row), so items every row scores alike add nothing. Two pseudo-items, one
  at ``+c`` and one at ``-c``, are added first (an Agresti-Caffo-style adjustment), ``c = 100 * B * sum|w| / 2``
  the largest contrast one item can give: with weights that sum to zero and every ``a_ri`` in ``[0, 100 * B]``,
  ``|D_i| <= 100 * B * sum|w| / 2``. ``B`` bounds one item's outcome: 1 for correctness (so ``c = 100`` for a
  difference); for CER, whose per-line edits have no bound a priori (insertions can make a line's edits exceed its
  length), ``B`` is the larger of what a longest line read entirely wrong costs (``n * max_i chars_i / N``: every
  character substituted or deleted, edits = its length) and the largest ``o_i`` any of the contrast's runs gave; so
  ``c`` bounds every line's contrast in the data, and rows that read every line right still keep the room that
  one line read wrong would take. Hence an interval is never of zero width, and two rows that agree on every item
  still leave a difference of about ``1.4 * c / n`` points unresolved. ``var_i(D_i)`` also holds the seeds'
  disagreement on each item, which the seed part counts already: ``sum_r w_r**2 * mean_i(v_ri) / (k_r * n)``
  (``v_ri`` the unbiased variance of one run's ``100 * o_i`` across row r's seeds) is taken out once, never below
  what the pseudo-items alone give. Without per-item outcomes (older runs) each row's binomial variance with the
  Agresti-Coull adjustment ``(x + 2) / (n + 4)`` stands in for accuracy, unpaired (wider).

Degrees of freedom by Welch-Satterthwaite, the test-set part counted with ``n + 1``. A row needs two seeds for
its seed part: with fewer, nothing is estimated. Contrasts are in the metric's units (points); which sign is
better is the metric's (:func:`signed_verdict`, :func:`noninferiority_p` take its direction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

# Verdicts of a signed comparison (the expected sign + or -), of a "no difference" comparison (TOST) and of a
# non-inferiority comparison (one half of TOST).
AGREES, DISAGREES, NOT_SEPARATED = "agrees", "disagrees", "not separated"
EQUIVALENT, DIFFERS, NOT_SHOWN = "equivalent", "differs", "not shown"
NONINFERIOR, INFERIOR = "non-inferior", "inferior"
NOT_JUDGED = "not judged"
# A non-inferiority claim about a row and the row it is compared with: the row is not worse than it by more than
# the margin, or (the other way round) that row is not worse than this one: this row is not better by more.
NOT_WORSE, NOT_BETTER = "not worse", "not better"


@dataclass(frozen=True, eq=False)  # arrays: compared by identity
class ItemOutcomes:
    """One run's per-item outcomes on the metric's split, in fractions whose mean over the items is the run's
    metric / 100 (module docstring), and ``bound``, the largest value one item's outcome can take (``B``)."""

    values: np.ndarray  # (n,): bool, image i right; or float, line i's share of the CER (edits_i * n / N)
    bound: float = 1.0


@dataclass(frozen=True)
class RowSample:
    """One row's runs: the metric in % per seed and, where known, per-item outcomes (seeds x items)."""

    values: tuple[float, ...]
    outcomes: np.ndarray | None = None  # (k, n), bool (correctness) or float (shares); the same items for every row
    n_images: int | None = None  # the test set's size (from ``outcomes`` where given)
    outcome_bound: float = 1.0  # B: the largest value one item's outcome can take, over the row's runs

    @classmethod
    def of(cls, values: list[float], outcomes: list[ItemOutcomes | np.ndarray | None] | None = None) -> RowSample:
        """From per-seed metric values and per-seed outcomes (:class:`ItemOutcomes`, or a bool array of
        correctness; any None, or lengths that differ: unknown)."""
        if outcomes and all(o is not None for o in outcomes):
            items = [o if isinstance(o, ItemOutcomes) else ItemOutcomes(np.asarray(o, dtype=bool)) for o in outcomes]
            if len({len(o.values) for o in items}) == 1:
                binary = all(o.values.dtype == bool for o in items)
                stacked = np.stack([np.asarray(o.values, dtype=bool if binary else np.float64) for o in items])
                return cls(tuple(values), stacked, stacked.shape[1], max(o.bound for o in items))
        return cls(tuple(values))

    @property
    def k(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def sd(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if self.k > 1 else None


@dataclass(frozen=True)
class Estimate:
    """A contrast of row means (points), its standard error, degrees of freedom and what they give."""

    value: float
    se: float
    df: float
    test_set: str  # how the test-set noise entered: "paired" (per-image outcomes), "binomial", or "none"

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        half = sps.t.ppf(0.5 + level / 2, self.df) * self.se
        return self.value - half, self.value + half

    @property
    def p_value(self) -> float:
        """Two-sided p of the hypothesis that the contrast is zero."""
        return float(2 * sps.t.sf(abs(self.value) / self.se, self.df))

    def p_above(self, bound: float) -> float:
        """One-sided p of H0: contrast <= bound, against H1: contrast > bound."""
        return float(sps.t.sf((self.value - bound) / self.se, self.df))

    def p_below(self, bound: float) -> float:
        """One-sided p of H0: contrast >= bound, against H1: contrast < bound."""
        return float(sps.t.cdf((self.value - bound) / self.se, self.df))

    def tost_p(self, margin: float) -> float:
        """The equivalence test's p (two one-sided tests against -margin and +margin): the larger of the two."""
        return max(self.p_above(-margin), self.p_below(margin))


def _welch_satterthwaite(parts: list[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of variance parts ``(variance, df)``."""
    total = sum(v for v, _ in parts)
    denom = sum(v * v / d for v, d in parts if v > 0)
    return total * total / denom if denom > 0 else math.inf


def contrast(rows: list[RowSample], weights: list[float]) -> Estimate | None:
    """``sum_r w_r * mean_r`` with the seed and test-set variance (module docstring); None when a row with a
    non-zero weight has fewer than two seeds."""
    used = [(r, w) for r, w in zip(rows, weights, strict=True) if w != 0]
    if not used or any(r.k < 2 for r, _ in used):
        return None
    value = sum(w * r.mean for r, w in used)
    parts = [(w * w * r.sd**2 / r.k, r.k - 1) for r, w in used]
    sizes = {r.n_images for r, _ in used}
    if all(r.outcomes is not None for r, _ in used) and len(sizes) == 1:
        per_image = sum(w * 100.0 * r.outcomes.mean(axis=0) for r, w in used)
        c = 100.0 * sum(abs(w) for _, w in used) / 2 * max(r.outcome_bound for r, _ in used)
        augmented = np.concatenate([per_image, [c, -c]])
        n = len(augmented)
        # The seed part already holds the seeds' disagreement on each image; taken out of the test-set part
        # once (never below what the two pseudo-images alone give).
        within = sum(w * w * 1e4 * float(np.mean(_within_item_variance(r.outcomes))) / r.k for r, w in used)
        floor = 2 * c * c / (n - 1) / n
        parts.append((max(float(np.var(augmented, ddof=1)) / n - within / n, floor), n - 1))
        test_set = "paired"
    elif all(r.n_images for r, _ in used):
        var = 0.0
        for r, w in used:
            n = r.n_images
            p = (r.mean / 100 * n + 2) / (n + 4)
            var += w * w * 1e4 * p * (1 - p) / (n + 4)
        parts.append((var, min(r.n_images for r, _ in used) + 3))
        test_set = "binomial"
    else:
        test_set = "none"
    se = math.sqrt(sum(v for v, _ in parts))
    if se == 0:  # no test-set noise known and no seed varies: nothing to base an interval on
        return None
    return Estimate(value, se, _welch_satterthwaite(parts), test_set)


def _within_item_variance(outcomes: np.ndarray) -> np.ndarray:
    """Per item, the unbiased variance of one run's outcome across the row's seeds. Correctness keeps the
    Bernoulli form (the same value as np.var's, and the same floating-point numbers as the committed reports)."""
    k = outcomes.shape[0]
    if outcomes.dtype != bool:
        return np.var(outcomes, axis=0, ddof=1)
    share = outcomes.mean(axis=0)
    return share * (1 - share) * k / (k - 1)


def difference(a: RowSample, b: RowSample) -> Estimate | None:
    """mean(a) - mean(b)."""
    return contrast([a, b], [1.0, -1.0])


def signed_verdict(expect: str, estimate: Estimate | None, p_adjusted: float | None, alpha: float,
                   higher_is_better: bool = True) -> str:
    """The expected sign (``+``: better than the row compared with, ``-``: worse, in the metric's direction: a
    lower CER is better) against ours: **agrees** when the (Holm-adjusted) two-sided test rejects zero on the
    expected side, **disagrees** on the other side, **not separated** otherwise."""
    if expect not in ("+", "-"):
        raise ValueError(f"expected sign {expect!r}: use '+' or '-' (or '0' with an equivalence margin)")
    if estimate is None or p_adjusted is None:
        return NOT_JUDGED
    if p_adjusted >= alpha:
        return NOT_SEPARATED
    side = "+" if (estimate.value > 0) == higher_is_better else "-"
    return AGREES if side == expect else DISAGREES


def _bounds_from_above(expect: str, higher_is_better: bool) -> bool:
    """Whether a non-inferiority claim bounds the difference (this row minus the compared-with row, in the
    metric's units) from above, ``d < +margin``, rather than from below, ``d > -margin``."""
    if expect not in (NOT_WORSE, NOT_BETTER):
        raise ValueError(f"non-inferiority claim {expect!r}: use {NOT_WORSE!r} or {NOT_BETTER!r}")
    # "not better" with higher better, or "not worse" with lower better (a CER not above the other's + margin)
    return (expect == NOT_BETTER) == higher_is_better


def noninferiority_p(estimate: Estimate, margin: float, expect: str, higher_is_better: bool = True) -> float:
    """The one-sided p of a non-inferiority claim about ``d`` = this row minus the compared-with row: ``not
    worse``: H0 "this row is worse by at least ``margin``" against H1 "worse by less (or better)"; ``not
    better``: H0 "better by at least ``margin``", i.e. the compared-with row is not worse than this one by more.
    One of TOST's two halves, in the metric's direction."""
    if margin <= 0:
        raise ValueError(f"non-inferiority margin {margin}: a positive number of points (experiments/prereg/)")
    if _bounds_from_above(expect, higher_is_better):
        return estimate.p_below(margin)
    return estimate.p_above(-margin)


def noninferiority_verdict(expect: str, estimate: Estimate | None, margin: float, p_adjusted: float | None,
                           alpha: float, higher_is_better: bool = True) -> str:
    """A non-inferiority claim (:func:`noninferiority_p`): **non-inferior** when its (Holm-adjusted) one-sided test
    rejects; **inferior** when the opposite one-sided test rejects at alpha (the 1 - 2 alpha interval lies wholly
    beyond the margin, as TOST's "differs" reads its two-sided test unadjusted); **not shown** otherwise."""
    if estimate is None or p_adjusted is None:
        return NOT_JUDGED
    if p_adjusted < alpha:
        return NONINFERIOR
    beyond = estimate.p_above(margin) if _bounds_from_above(expect, higher_is_better) else estimate.p_below(-margin)
    return INFERIOR if beyond < alpha else NOT_SHOWN


def equivalence_verdict(estimate: Estimate | None, margin: float, alpha: float) -> str:
    """A "no difference" claim by TOST against ``margin`` points: **equivalent** when both one-sided tests reject
    (the 1 - 2 alpha interval lies inside +/- margin), **differs** when the two-sided test rejects zero, **not
    shown** otherwise (an interval too wide to tell)."""
    if estimate is None:
        return NOT_JUDGED
    if margin <= 0:
        raise ValueError(f"equivalence margin {margin}: a positive number of points (experiments/prereg/)")
    if estimate.tost_p(margin) < alpha:
        return EQUIVALENT
    return DIFFERS if estimate.p_value < alpha else NOT_SHOWN


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate), in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """Mean, the half-width of its t-based interval over the values (seeds), and the std (None with one value)."""
    m = float(np.mean(values))
    if len(values) < 2:
        return m, None, None
    sd = float(np.std(values, ddof=1))
    return m, float(sps.t.ppf(0.5 + level / 2, len(values) - 1)) * sd / math.sqrt(len(values)), sd


def seeds_for(sd: float, half_width: float, level: float = 0.95, most: int = 20) -> int:
    """The fewest seeds whose t-interval of a difference of two rows with std ``sd`` each is at most
    ``half_width`` points wide on each side (the sizing rule of experiments/prereg/); ``most`` at the most."""
    for k in range(2, most + 1):
        if sps.t.ppf(0.5 + level / 2, 2 * k - 2) * sd * math.sqrt(2 / k) <= half_width:
            return k
    return most
