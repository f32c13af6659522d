"""The alphabet of a line recognizer: characters <-> CTC class indices (0 is the CTC blank), and greedy decoding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


class Charset:
    """Characters in a fixed order; class ``i + 1`` is ``chars[i]``, class 0 the CTC blank."""

    BLANK = 0

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError(f"a charset is distinct single characters, got {chars!r}")
        self.chars = chars
        self.index = {c: i + 1 for i, c in enumerate(chars)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Charset:
        """Every character the texts use, sorted (the training split's: IAM, READ2016...)."""
        return cls(sorted(set("".join(texts))))

    @property
    def num_classes(self) -> int:
        return len(self.chars) + 1  # + the blank

    def unknown(self, text: str) -> list[str]:
        return sorted(set(text) - set(self.index))

    def encode(self, text: str) -> list[int]:
        missing = self.unknown(text)
        if missing:
            raise ValueError(f"characters {missing} are not in the charset ({''.join(self.chars)!r})")
        return [self.index[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i - 1] for i in ids if 0 < i <= len(self.chars))

    def greedy(self, logits: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Best path decoding of (B, T, C) logits over each line's first ``lengths[b]`` frames: the most likely class
        per frame, repeats merged, blanks dropped."""
        best = logits.argmax(-1).cpu()
        texts = []
        for row, n in zip(best, lengths.tolist()):
            row = row[:n]
            keep = torch.ones_like(row, dtype=torch.bool)
            keep[1:] = row[1:] != row[:-1]
            texts.append(self.decode(row[keep & (row != self.BLANK)].tolist()))
        return texts
