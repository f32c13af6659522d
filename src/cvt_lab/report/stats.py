"""Mean, standard deviation and t-based 95% confidence intervals over seeds, Welch's interval for a difference
of two rows' means, and the verdict on a paper's claim that such an interval gives."""

from __future__ import annotations

import math
import statistics

# Two-sided 95% t quantiles by degrees of freedom, for when scipy is not installed.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}

AGREES, DISAGREES, NOT_SEPARATED = "agrees", "disagrees", "not separated"


def t_quantile(df: float) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom (Welch's may be fractional)."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        return _T975.get(math.floor(df), 1.96 + 2.5 / df)  # rounding df down: the wider interval


def mean_ci(values: list[float]) -> tuple[float, float | None, float | None]:
    """Mean, the half-width of its t-based 95% CI, and the std (both None with fewer than two values)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None, None
    sd = statistics.stdev(values)
    return m, t_quantile(len(values) - 1) * sd / math.sqrt(len(values)), sd


def welch_ci(a: list[float], b: list[float]) -> tuple[float | None, float | None, float | None]:
    """mean(a) - mean(b) and its 95% interval (low, high) by Welch's t: two independent samples (seeds do not
    pair runs of different models), unequal variances. Interval None with fewer than two values on a side; a
    zero-width interval where neither side varies."""
    if not a or not b:
        return None, None, None
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, None, None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(df) * se
    return diff, diff - half, diff + half


def verdict(expect: str, low: float | None, high: float | None) -> str | None:
    """Our difference from the reference row against the paper's expected sign (``+``: the row is better,
    ``-``: worse, ``0``: the paper finds no difference): ``agrees`` when the 95% interval excludes zero on the
    expected side, ``disagrees`` when it excludes zero on the other side (for ``0``: on either side),
    ``not separated`` when it includes zero. None without an interval."""
    if low is None or high is None:
        return None
    if expect not in ("+", "-", "0"):
        raise ValueError(f"expected sign {expect!r}: use '+', '-' or '0' (experiments/paper_tables.yaml, expect:)")
    side = "+" if low > 0 else "-" if high < 0 else None
    if side is None:
        return NOT_SEPARATED
    return AGREES if side == expect else DISAGREES
