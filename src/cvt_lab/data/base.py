"""The shared LightningDataModule: splits, loaders, seeding, and the batch-level augmentation on the device."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from timm.data.random_erasing import RandomErasing
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from cvt_lab.config import AugmentConfig


class DatasetNotFoundError(FileNotFoundError):
    """A dataset path is missing or empty; the message says what was expected and how to get it."""


def derived_seed(seed: int, *counters: int) -> int:
    """A seed that is a function of the run's seed and a position in training (epoch, step, sample) alone, so
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


class SeededSampler(Sampler[tuple[int, int]]):
    """An :class:`EpochRandomSampler`'s order, each index paired with the seed of its sample's augmentation,
    a function of (seed, epoch, index) alone: per-image randomness does not depend on which loader worker, or
    how many, load the image, so workers can persist across epochs and a resumed run replays it exactly.
    Not a RandomSampler, so that under DDP Lightning wraps it (keeping the seeds) rather than replacing it."""

    def __init__(self, order: EpochRandomSampler):
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.order.epoch()
        return ((i, derived_seed(self.order.seed, epoch, i)) for i in self.order)


class SeededSamples(Dataset):
    """Takes the (index, seed) pairs of a :class:`SeededSampler` and seeds the random number generators the
    per-image transforms draw from (Python's, NumPy's and torch's CPU generator) before loading the image."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        # Not torch.manual_seed: it also seeds every accelerator, ~100x the cost, for transforms on the CPU.
        random.seed(seed)
        np.random.seed(seed)
        torch.random.default_generator.manual_seed(seed)
        return self.dataset[index]


class ImageDataModule(pl.LightningDataModule):
    """Subclasses return the train / val / test datasets from ``load``; ``setup`` calls it once.

    Arguments mirror :class:`cvt_lab.config.DataConfig`; ``batch_size``, ``image_size`` and ``augment``
    come from the recipe and the model.
    """

    backends: tuple[str, ...] = ("torch",)  # the loaders this data supports (data.backend)
    augments_per_image = False  # True: the datasets draw random numbers per image (loader workers seeded per sample)

    def __init__(self, name: str, num_classes: int, batch_size: int = 64, image_size: int = 224,
                 augment: AugmentConfig | dict | None = None, root: str | None = None, download: bool = False,
                 in_chans: int = 3, num_workers: int = 0, eval_batch_size: int | None = None,
                 val_fraction: float = 0.1, split_seed: int = 0, finetune_steps: int = 10000,
                 num_samples: int | None = None, drop_last: bool = False, seed: int = 0, backend: str = "torch"):
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
        self.backend = backend
        self.train_set: Dataset | Path | None = None
        self.val_set: Dataset | Path | None = None
        self.test_set: Dataset | Path | None = None

    def load(self) -> tuple[Dataset | Path, Dataset | Path, Dataset | Path]:
        """The train, val and test splits (a backend that reads files itself gets their folders)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.backend not in self.backends:
            raise ValueError(f"data.backend={self.backend!r} is not available for data={self.name}; valid: "
                             f"{', '.join(self.backends)} (dali: ImageNet-layout folders, data=imagefolder)")
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = self.load()

    def current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    @property
    def training(self) -> bool:
        return self.trainer is not None and self.trainer.training

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        # Every training step's randomness (batch augmentation, Mixup/CutMix, dropout, drop path) starts from
        # a seed fixed by (seed, step): resuming at any checkpoint replays it exactly.
        if self.training:
            pl.seed_everything(derived_seed(self.seed, self.trainer.global_step), verbose=False)
        return batch

    def random_erasing(self, images: torch.Tensor) -> torch.Tensor:
        """timm's RandomErasing over a normalized batch, on the batch's device (per image, as in timm's loader)."""
        a = self.augment
        if a.re_prob <= 0:
            return images
        return RandomErasing(a.re_prob, mode=a.re_mode, device=images.device)(images)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        sampler = EpochRandomSampler(dataset, self.seed, self.current_epoch) if train else None
        if train and self.augments_per_image:
            dataset, sampler = SeededSamples(dataset), SeededSampler(sampler)
        on_cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=on_cuda,
        )

    def train_dataloader(self):
        return self._loader(self.train_set, train=True)

    def val_dataloader(self):
        return self._loader(self.val_set, train=False)

    def test_dataloader(self):
        return self._loader(self.test_set, train=False)
