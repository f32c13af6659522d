"""Mean, standard deviation and t-based 95% confidence intervals over seeds."""

from __future__ import annotations

import math
import statistics

# Two-sided 95% t quantiles by degrees of freedom, for when scipy is not installed.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t_quantile(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        return _T975.get(df, 1.96 + 2.5 / df)


def mean_ci(values: list[float]) -> tuple[float, float | None, float | None]:
    """Mean, the half-width of its t-based 95% CI, and the std (both None with fewer than two values)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None, None
    sd = statistics.stdev(values)
    return m, t_quantile(len(values) - 1) * sd / math.sqrt(len(values)), sd
