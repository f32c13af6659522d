"""The shared LightningDataModule: splits, loaders, seeding, and the batch-level augmentation on the device."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from timm.data.random_erasing import RandomErasing
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from cvt_lab.config import AugmentConfig


class DatasetNotFoundError(FileNotFoundError):
    """A dataset path is missing or empty; the message says what was expected and how to get it."""


def derived_seed(seed: int, *counters: int) -> int:
    """A seed that is a function of the run's seed and a position in training (epoch, step, sample) alone, so
    a run resumed from a checkpoint draws exactly the random numbers an uninterrupted run draws."""
    for c in counters:
        seed = (seed * 1_000_003 + c) % (2**32)
    return seed


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of one training step's randomness on one rank (batch augmentation, Mixup/CutMix, dropout, drop
    path): ranks draw independent streams, and rank 0 the stream of a single-process run."""
    return derived_seed(seed, step, rank) if rank else derived_seed(seed, step)


class EpochRandomSampler(DistributedSampler):
    """This rank's share of a random order fixed by (seed, epoch), the epoch asked of the trainer when the epoch's
    iteration starts.

    Every rank draws the same order and takes every ``num_replicas``-th position of it, padded with its first
    positions to a multiple of the ranks as torch's DistributedSampler pads: the ranks' samples are disjoint, and
    one rank alone gets the whole order (the order of a ``RandomSampler`` seeded by (seed, epoch)). Being a
    DistributedSampler, Lightning uses it as it is under DDP. A run resumed from a checkpoint taken mid-epoch
    skips the samples its epoch has trained on (:meth:`resume`), where a plain loader would start the epoch over.
    """

    def __init__(self, data_source: Dataset, seed: int, epoch: Callable[[], int], num_replicas: int = 1,
                 rank: int = 0):
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.current_epoch = epoch
        self.resume_at = (-1, 0)  # (epoch, samples of it this rank has trained on), from a checkpoint

    def resume(self, epoch: int, samples: int) -> None:
        """Start ``epoch`` (when it is the one iterated next) after its first ``samples`` samples of this rank."""
        self.resume_at = (epoch, samples)

    def positions(self) -> tuple[int, Iterator[tuple[int, int]]]:
        """The epoch, and this rank's (position, index) pairs of its order; positions past the dataset's length
        are the padding."""
        epoch, n = self.current_epoch(), len(self.dataset)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(self.seed, epoch))).tolist()
        order += order[:self.total_size - n]
        skip = self.resume_at[1] if self.resume_at[0] == epoch else 0
        mine = range(self.rank, self.total_size, self.num_replicas)[skip:]
        return epoch, ((p, order[p]) for p in mine)

    def __iter__(self) -> Iterator[int]:
        return (i for _, i in self.positions()[1])


class SeededSampler(EpochRandomSampler):
    """An :class:`EpochRandomSampler`'s indices, each paired with the seed of its sample's augmentation, a function
    of (seed, epoch, index) alone: per-image randomness does not depend on which loader worker, or how many, load
    the image, so workers can persist across epochs and a resumed run replays it exactly. The index alone makes
    the seed unique across ranks, whose indices are disjoint; the few padding repeats that even out the ranks
    take their position (>= the dataset's length, no index's) instead, so they are augmented afresh."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, pairs = self.positions()
        n = len(self.dataset)
        return ((i, derived_seed(self.seed, epoch, i if p < n else p)) for p, i in pairs)


class ResumableLoader(DataLoader):
    """A training loader that Lightning saves in checkpoints and restores (its ``state_dict``/``load_state_dict``,
    what Lightning calls a resumable loader): the epoch and how many of its batches were trained, so a run resumed
    from a checkpoint taken mid-epoch (``every_n_train_steps``, SLURM's requeue) continues with the batches an
    uninterrupted run draws next. ``progress`` gives (epoch, batches of it trained)."""

    def __init__(self, *args, progress: Callable[[], tuple[int, int]], **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.progress()
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume(state["epoch"], state["batches"] * self.batch_size)


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

    def epoch_progress(self) -> tuple[int, int]:
        """(epoch, batches of it trained): where a checkpoint saved now leaves training. Lightning counts a batch
        ready once fetched; checkpoints are saved between steps (after a batch's step, or validation), where the
        batches ready are those trained, as many as Lightning counts done when it resumes from that checkpoint."""
        return self.current_epoch(), self.trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def ranks(self) -> tuple[int, int]:
        """(number of ranks, this process's rank) of the training, (1, 0) outside of distributed training."""
        t = self.trainer
        return (t.world_size, t.global_rank) if t is not None else (1, 0)

    @property
    def training(self) -> bool:
        return self.trainer is not None and self.trainer.training

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        # Every training step's randomness (batch augmentation, Mixup/CutMix, dropout, drop path) starts from
        # a seed fixed by (seed, step, rank): resuming at any checkpoint replays it exactly, on every rank.
        if self.training:
            pl.seed_everything(step_seed(self.seed, self.trainer.global_step, self.trainer.global_rank), verbose=False)
        return batch

    def random_erasing(self, images: torch.Tensor) -> torch.Tensor:
        """timm's RandomErasing over a normalized batch, on the batch's device (per image, as in timm's loader)."""
        a = self.augment
        if a.re_prob <= 0:
            return images
        return RandomErasing(a.re_prob, mode=a.re_mode, device=images.device)(images)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        num_replicas, rank = self.ranks()
        on_cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        common = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0, "pin_memory": on_cuda}
        if not train:
            # Each sample once, on one rank (some ranks get a batch less): torchmetrics then gathers the metrics
            # of exactly the split, where Lightning's DistributedSampler would pad with repeated samples.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas, rank, shuffle=False) if num_replicas > 1 \
                else None
            return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler, **common)
        sampler_type = SeededSampler if self.augments_per_image else EpochRandomSampler
        sampler = sampler_type(dataset, self.seed, self.current_epoch, num_replicas, rank)
        if self.augments_per_image:
            dataset = SeededSamples(dataset)
        return ResumableLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=self.drop_last,
                               progress=self.epoch_progress, **common)

    def train_dataloader(self):
        return self._loader(self.train_set, train=True)

    def val_dataloader(self):
        return self._loader(self.val_set, train=False)

    def test_dataloader(self):
        return self._loader(self.test_set, train=False)
