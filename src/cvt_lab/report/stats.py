"""The statistics of a table's rows: estimates of row contrasts whose uncertainty counts both the seeds and the
finite test set, two-sided and equivalence (TOST) tests, and Holm's correction across a family of tests.

A row is a set of runs (one per seed) evaluated on the same test images. Its accuracy in % varies with the
seed (training noise) and, for a claim about the data distribution rather than this test set, with the test
set drawn (test-set noise). For a contrast ``sum_r w_r * mean_r`` (a difference of two rows: ``w = (+1, -1)``)
the variance is the sum of

* the seed part, ``sum_r w_r**2 * s_r**2 / k_r`` (``s_r`` the std over the row's ``k_r`` seeds: Welch), and
* the test-set part, ``var_i(D_i) / n`` with ``D_i = sum_r w_r * a_ri`` and ``a_ri`` the share of row r's seeds
  that got test image i right (in %): the rows are paired over images, so images every row gets right or wrong
  add nothing. Two pseudo-images, one at ``+c`` and one at ``-c`` (``c = 100 * sum|w| / 2``, the largest
  contrast one image can give), are added first (an Agresti-Caffo-style adjustment): an interval is never of
  zero width, and two rows that agree on every image still leave a difference of about ``1.4 * 100 / n``
  points unresolved. ``var_i(D_i)`` also holds the seeds' disagreement on each image, which the seed part
  counts already: ``sum_r w_r**2 * mean_i(v_ri) / (k_r * n)`` (``v_ri`` the variance of one run's correctness
  on image i across row r's seeds) is taken out once, never below what the pseudo-images alone give.
  Without per-image outcomes (older runs) each row's binomial variance with the Agresti-Coull adjustment
  ``(x + 2) / (n + 4)`` stands in, unpaired (wider).

Degrees of freedom by Welch-Satterthwaite, the test-set part counted with ``n + 1``. A row needs two seeds for
its seed part: with fewer, nothing is estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

# Verdicts of a signed comparison (the paper's sign + or -) and of a "no difference" comparison (TOST).
AGREES, DISAGREES, NOT_SEPARATED = "agrees", "disagrees", "not separated"
EQUIVALENT, DIFFERS, NOT_SHOWN = "equivalent", "differs", "not shown"
NOT_JUDGED = "not judged"


@dataclass(frozen=True)
class RowSample:
    """One row's runs: accuracy in % per seed and, where known, per-image correctness (seeds x images)."""

    accs: tuple[float, ...]
    outcomes: np.ndarray | None = None  # bool (k, n): run s right on image i; the same images for every row
    n_images: int | None = None  # the test set's size (from ``outcomes`` where given)

    @classmethod
    def of(cls, accs: list[float], outcomes: list[np.ndarray | None] | None = None) -> RowSample:
        """From per-seed accuracies and per-seed outcome arrays (any None, or lengths that differ: unknown)."""
        if outcomes and all(o is not None for o in outcomes) and len({len(o) for o in outcomes}) == 1:
            stacked = np.stack([np.asarray(o, dtype=bool) for o in outcomes])
            return cls(tuple(accs), stacked, stacked.shape[1])
        return cls(tuple(accs))

    @property
    def k(self) -> int:
        return len(self.accs)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accs))

    @property
    def sd(self) -> float | None:
        return float(np.std(self.accs, ddof=1)) if self.k > 1 else None


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

    def tost_p(self, margin: float) -> float:
        """The equivalence test's p (two one-sided tests against -margin and +margin): the larger of the two."""
        p_low = sps.t.sf((self.value + margin) / self.se, self.df)  # H0: contrast <= -margin
        p_high = sps.t.cdf((self.value - margin) / self.se, self.df)  # H0: contrast >= +margin
        return float(max(p_low, p_high))


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
        c = 100.0 * sum(abs(w) for _, w in used) / 2
        augmented = np.concatenate([per_image, [c, -c]])
        n = len(augmented)
        # The seed part already holds the seeds' disagreement on each image; taken out of the test-set part
        # once (never below what the two pseudo-images alone give).
        within = sum(w * w * 1e4 * float(np.mean(_within_image_variance(r.outcomes))) / r.k for r, w in used)
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


def _within_image_variance(outcomes: np.ndarray) -> np.ndarray:
    """Per image, the unbiased variance of one run's correctness across the row's seeds."""
    k = outcomes.shape[0]
    share = outcomes.mean(axis=0)
    return share * (1 - share) * k / (k - 1)


def difference(a: RowSample, b: RowSample) -> Estimate | None:
    """mean(a) - mean(b)."""
    return contrast([a, b], [1.0, -1.0])


def signed_verdict(expect: str, estimate: Estimate | None, p_adjusted: float | None, alpha: float) -> str:
    """The paper's sign (``+``: better than the row compared with, ``-``: worse) against ours: **agrees** when
    the (Holm-adjusted) two-sided test rejects zero on the expected side, **disagrees** on the other side,
    **not separated** otherwise."""
    if expect not in ("+", "-"):
        raise ValueError(f"expected sign {expect!r}: use '+' or '-' (or '0' with an equivalence margin)")
    if estimate is None or p_adjusted is None:
        return NOT_JUDGED
    if p_adjusted >= alpha:
        return NOT_SEPARATED
    side = "+" if estimate.value > 0 else "-"
    return AGREES if side == expect else DISAGREES


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
