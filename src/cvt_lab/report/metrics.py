"""The metrics a table can compare, in one place: the results.json key, its direction (higher or lower is better),
its name in the report, the defaults of its gates, and how a run's per-item outcomes (``outcomes.npz``,
:mod:`cvt_lab.outcomes`) become the items the test-set part of an interval pairs (:mod:`cvt_lab.report.stats`).

A table names its metric in ``experiments/paper_tables.yaml`` (``metric:``, default ``test/acc1``); a pilot reads the
same metric on the validation split (``--metric val/acc1`` or ``val/cer``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvt_lab.outcomes import CHARS, EDITS, outcome_key
from cvt_lab.report.stats import ItemOutcomes

DEFAULT_METRIC = "test/acc1"


@dataclass(frozen=True)
class Metric:
    key: str  # the results.json key, a fraction there; the report compares it in %
    column: str  # its name in the CSV columns and in a paper row of paper_tables.yaml: top1, cer
    label: str  # its name in the report's headers: top-1, CER
    split_name: str  # test, validation
    higher_is_better: bool
    # The gate at the best end (%): a compared-with row at or beyond it cannot show a gain, so it is not judged:
    # a ceiling for accuracy (at or above), a floor for CER (at or below).
    default_ceiling: float
    # The metric's chance level in %, where it is one number (CER: 100%, a recognizer that reads nothing deletes
    # every character); None for accuracy, whose chance is 100 / the data's classes.
    chance: float | None = None
    companion: str | None = None  # a results.json key described beside it, never tested (CER: WER)

    @property
    def split(self) -> str:
        return self.key.split("/")[0]

    @property
    def kind(self) -> str:
        """What is measured, whatever the split: acc1, cer."""
        return self.key.split("/")[1]

    @property
    def description(self) -> str:
        return f"{self.split_name} {self.label}"

    def item_outcomes(self, arrays: dict[str, np.ndarray]) -> ItemOutcomes | None:
        """One run's per-item outcomes on this metric's split, from its ``outcomes.npz`` arrays (None where the run
        saved none: an older run, or a line recognizer's exact matches without the edit counts)."""
        if self.kind == "acc1":
            correct = arrays.get(outcome_key(self.split))
            return None if correct is None else ItemOutcomes(np.asarray(correct, dtype=bool))
        edits, chars = arrays.get(outcome_key(self.split, EDITS)), arrays.get(outcome_key(self.split, CHARS))
        if edits is None or chars is None or len(edits) != len(chars) or chars.sum() <= 0:
            return None
        n, total = len(chars), float(chars.sum())
        shares = edits.astype(np.float64) * n / total  # mean over lines = sum(edits) / sum(chars), the CER
        # B (stats' docstring): a longest line read entirely wrong, or the largest share this run gave
        return ItemOutcomes(shares, max(n * float(chars.max()) / total, float(shares.max())))

    def is_at_best_end(self, mean: float, ceiling: float) -> bool:
        return mean >= ceiling if self.higher_is_better else mean <= ceiling

    def is_near_chance(self, mean: float, chance: float, margin: float) -> bool:
        return mean <= chance + margin if self.higher_is_better else mean >= chance - margin


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("test/acc1", "top1", "top-1", "test", True, 97.0),
    Metric("val/acc1", "top1", "top-1", "validation", True, 97.0),
    Metric("test/cer", "cer", "CER", "test", False, 1.0, chance=100.0, companion="test/wer"),
    Metric("val/cer", "cer", "CER", "validation", False, 1.0, chance=100.0, companion="val/wer"),
)}
# Described beside a metric (companion), never compared: a job reads them as it reads the metrics.
DESCRIBED = ("test/wer", "val/wer")


def metric_of(key: str) -> Metric:
    """The metric of a results.json key; a ValueError naming the known ones otherwise."""
    if key not in METRICS:
        raise ValueError(f"metric {key!r}: the reports compare {', '.join(METRICS)}")
    return METRICS[key]


def table_metric(spec: dict, chosen: str | None = None) -> Metric:
    """The metric a table's report compares: ``chosen`` (a pilot's validation metric, a registration's), else the
    table's own (``metric:`` in paper_tables.yaml); refused when it measures something else than the table's."""
    own = metric_of(spec.get("metric", DEFAULT_METRIC))
    metric = metric_of(chosen or own.key)
    if metric.kind != own.kind:
        same = ", ".join(k for k, m in METRICS.items() if m.kind == own.kind)
        raise ValueError(f"metric {metric.key}: this table compares {own.label} ({same})")
    return metric
