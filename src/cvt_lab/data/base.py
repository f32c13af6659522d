"""The shared LightningDataModule: splits, loaders, and the recipe's augmentation."""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from cvt_lab.config import AugmentConfig


class DatasetNotFoundError(FileNotFoundError):
    """A dataset path is missing or empty; the message says what was expected and how to get it."""


def derived_seed(seed: int, *counters: int) -> int:
    """A seed that is a function of the run's seed and a position in training (epoch, step, worker) alone, so
    a run resumed from a checkpoint draws exactly the random numbers an uninterrupted run draws."""
    for c in counters:
        seed = (seed * 1_000_003 + c) % (2**32)
    return seed


class EpochRandomSampler(RandomSampler):
    """Shuffles with a generator seeded by (seed, current epoch), asked of the trainer when each epoch starts."""

    def __init__(self, data_source: Dataset, seed: int, epoch: Callable[[], int]):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(derived_seed(self.seed, self.epoch()))
        return super().__iter__()


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

    def current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _seed_worker(self, worker_id: int) -> None:
        """Runs in each (forked) loader worker as an epoch starts: per-image augmentation there is a
        function of (seed, epoch, worker) too."""
        pl.seed_everything(derived_seed(self.seed, self.current_epoch(), worker_id + 1), verbose=False)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        # Every training step's randomness (batch augmentation, Mixup/CutMix, dropout, drop path) starts from
        # a seed fixed by (seed, step): resuming at any checkpoint replays it exactly.
        if self.trainer is not None and self.trainer.training:
            pl.seed_everything(derived_seed(self.seed, self.trainer.global_step), verbose=False)
        return batch

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochRandomSampler(dataset, self.seed, self.current_epoch) if train else None,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            worker_init_fn=self._seed_worker if train and self.num_workers > 0 else None,
            # Workers restart each epoch so that _seed_worker sees the epoch (cheap: they fork).
            persistent_workers=self.num_workers > 0 and not train,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)
