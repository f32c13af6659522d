"""The names of a run's per-item outcome arrays (``outcomes.npz``, written by :mod:`cvt_lab.results`): one place for
the modules that gather them (:class:`cvt_lab.module.ImageClassifier`, :class:`cvt_lab.htr.module.LineRecognizer`)
and the report that reads them (:mod:`cvt_lab.report.metrics`). Imports nothing, so every layer may use it.

Per split (``val``, ``test``), in the loaders' order:

* ``<split>``: bool, the image's top-1 prediction right (a classifier) or the line read exactly (a line recognizer);
* ``<split>_edits``: int, a line recognizer's character edit distance from its prediction to the transcription;
* ``<split>_chars``: int, the transcription's length in characters (a split's CER is sum(edits) / sum(chars)).
"""

from __future__ import annotations

EDITS, CHARS = "edits", "chars"  # the parts of a split's outcomes that are counts, not booleans
COUNTS = (EDITS, CHARS)


def outcome_key(split: str, part: str | None = None) -> str:
    """The array name of a split's outcomes: ``test`` (correctness), ``test_edits``, ``test_chars``."""
    return split if part is None else f"{split}_{part}"


def outcome_split(key: str) -> str:
    """The split an array belongs to (``test_edits`` -> ``test``)."""
    return key.split("_", 1)[0]


def is_count(key: str) -> bool:
    """Whether an array holds counts (integers) rather than correctness (booleans)."""
    return "_" in key and key.split("_", 1)[1] in COUNTS
