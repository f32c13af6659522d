"""The shared LightningDataModule: splits, loaders, and the recipe's augmentation."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from cvt_lab.config import AugmentConfig


class DatasetNotFoundError(FileNotFoundError):
    """A dataset path is missing or empty; the message says what was expected and how to get it."""


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's randomness (order, augmentation, dropout): a function of (seed, epoch) alone,
    so a run resumed from an epoch's checkpoint draws exactly what an uninterrupted run draws."""
    return (seed * 1_000_003 + epoch) % (2**32)


class EpochRandomSampler(RandomSampler):
    """Shuffles with a generator seeded by (seed, epoch): Lightning calls ``set_epoch`` before each epoch, so
    a run resumed from a checkpoint sees the same order as an uninterrupted one, whatever else drew random numbers."""

    def __init__(self, data_source: Dataset, seed: int = 0):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(epoch_seed(self.seed, epoch))


class ImageDataModule(pl.LightningDataModule):
    """Subclasses fill ``self.train_set``, ``self.val_set`` and ``self.test_set`` in ``setup``.

    Arguments mirror :class:`cvt_lab.config.DataConfig`; ``batch_size``, ``image_size`` and ``augment``
    come from the recipe and the model.
    """

    def __init__(self, name: str, num_classes: int, batch_size: int = 64, image_size: int = 224,
                 augment: AugmentConfig | dict | None = None, root: str | None = None, download: bool = False,
                 in_chans: int = 3, num_workers: int = 0, eval_batch_size: int | None = None,
                 val_fraction: float = 0.1, split_seed: int = 0, finetune_steps: int = 10000,
                 num_samples: int | None = None, drop_last: bool = False, seed: int = 0):
        super().__init__()
        self.name = name
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.image_size = image_size
        self.augment = augment if isinstance(augment, AugmentConfig) else AugmentConfig(**(augment or {}))
        self.root = root
        self.download = download
        self.in_chans = in_chans
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.finetune_steps = finetune_steps  # read by recipe=finetune through the config
        self.num_samples = num_samples  # synthetic data only
        self.drop_last = drop_last  # Mixup/CutMix need even batches
        self.seed = seed  # the run's seed: the training order depends on it and on the epoch only
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochRandomSampler(dataset, self.seed) if train else None,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)
