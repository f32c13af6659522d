"""The LightningDataModule of every line data set: items -> widths for bucketing, augmentation, collation.

A subclass provides :meth:`LineDataModule.load` (the splits as :class:`LineDataset` s and the charset). Lines are
(C, height, width) float tensors, ink 1 on background 0 (the padding)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cvt_lab.data.base import derived_seed
from cvt_lab.htr.batching import BucketBatchSampler, LineAugment, LineCollate
from cvt_lab.htr.charset import Charset

SPLITS = ("train", "val", "test")


class LineDataset(Dataset):
    """``n`` lines; ``get(i)`` -> (image, text), ``widths`` their widths at the data set's height (for bucketing).
    Training lines are augmented with a generator seeded by (seed, epoch, index) alone."""

    def __init__(self, get: Callable[[int], tuple[torch.Tensor, str]], widths: Sequence[int], texts: Sequence[str],
                 augment: LineAugment | None = None, seed: int = 0):
        self.get, self.widths, self.texts = get, list(widths), list(texts)
        self.augment, self.seed, self.epoch = augment, seed, 0

    def __len__(self) -> int:
        return len(self.widths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        image, text = self.get(i)
        if self.augment is not None:
            gen = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch, i))
            image = self.augment(image, gen)
        return image, text

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class _EpochSampler(BucketBatchSampler):
    """Tells the training set the epoch too (its augmentation's seed, and new lines where it draws them)."""

    def __init__(self, dataset: LineDataset, *args: Any, **kwargs: Any):
        super().__init__(dataset.widths, *args, **kwargs)
        self.dataset = dataset

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        self.widths = list(self.dataset.widths)  # a data set that draws new lines each epoch has new widths


class LineDataModule(pl.LightningDataModule):
    """Shared arguments (``image_size`` is the line height; the rest of the classification data modules' arguments
    are accepted, so ``train.py`` builds either kind alike)."""

    task = "htr"

    def __init__(self, name: str, batch_size: int = 32, image_size: int = 32, in_chans: int = 1, num_workers: int = 0,
                 eval_batch_size: int | None = None, seed: int = 0, split_seed: int = 0, drop_last: bool = False,
                 augment_p: float = 0.5, min_width: int = 16, **_classification_args: Any):
        super().__init__()
        self.name, self.batch_size, self.height, self.in_chans = name, batch_size, image_size, in_chans
        self.num_workers, self.eval_batch_size = num_workers, eval_batch_size or batch_size
        self.seed, self.split_seed, self.drop_last = seed, split_seed, drop_last
        self.line_augment = LineAugment(p=augment_p) if augment_p > 0 else None
        self.min_width = min_width
        self.splits: dict[str, LineDataset] = {}
        self.charset: Charset = self.build_charset()
        # where the charset comes from, and what to do about a line it cannot encode (for the message)
        self.charset_source = ("the training split", "fix its transcription or drop the line")

    def build_charset(self) -> Charset:
        raise NotImplementedError

    def load(self) -> dict[str, LineDataset]:
        raise NotImplementedError

    def use_charset(self, charset: Charset, source: str, fix: str) -> None:
        """Encode and check the lines with ``charset`` (a checkpoint's, to evaluate it) instead of the training
        split's; ``source`` and ``fix`` name it and the remedy in the message of a line it cannot encode."""
        self.charset, self.charset_source = charset, (source, fix)

    def check_charset(self) -> None:
        """Every evaluation line's characters are in the charset: one clear error otherwise, naming the first such
        line and every character missing."""
        bad = [(split, i, self.charset.unknown(text)) for split in ("val", "test")
               for i, text in enumerate(self.splits[split].texts) if self.charset.unknown(text)]
        if bad:
            split, i, missing = bad[0]
            every = sorted({c for _, _, chars in bad for c in chars})
            more = f"; {len(bad)} lines in all, with {every}" if len(bad) > 1 else ""
            source, fix = self.charset_source
            raise ValueError(f"data={self.name}: line {self.line_name(split, i)} of the {split} split has "
                             f"character(s) {missing} outside the charset of {source} "
                             f"({''.join(self.charset.chars)!r}){more}; {fix}")

    def line_name(self, split: str, i: int) -> str:
        return f"{i}"

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.load()
            self.check_charset()
            self.splits["train"].augment = self.line_augment
            self.splits["train"].seed = self.seed

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        data = self.splits[split]
        size = self.batch_size if shuffle else self.eval_batch_size
        sampler = _EpochSampler(data, size, shuffle, seed=self.seed, drop_last=shuffle and self.drop_last)
        return DataLoader(data, batch_sampler=sampler, collate_fn=LineCollate(self.charset, self.min_width),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        for name in ("images", "widths", "targets", "target_lengths"):
            setattr(batch, name, getattr(batch, name).to(device))
        return batch
