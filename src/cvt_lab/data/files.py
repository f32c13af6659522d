"""Datasets read from disk: an ImageNet-layout folder and torchvision's CIFAR, Pets and Flowers.

Images go through timm's ``create_transform`` (RandAugment, random erasing, bicubic random resized
crop for training; resize + centre crop by ``crop_pct`` for evaluation), configured by the recipe.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision.datasets as tvd
from timm.data import create_transform
from torch.utils.data import Dataset, Subset

from cvt_lab.data.base import DatasetNotFoundError, ImageDataModule

log = logging.getLogger(__name__)


class SkipUnreadable(Dataset):
    """Wraps a dataset whose samples are files: an image that fails to load is reported by its path and
    replaced by the next readable one, so one bad file does not end a run hours in."""

    def __init__(self, dataset: Dataset, paths: list[str] | None = None):
        self.dataset = dataset
        self.paths = paths
        self.unreadable: set[str] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        for offset in range(min(len(self), 100)):
            i = (index + offset) % len(self)
            try:
                return self.dataset[i]
            except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for truncated/corrupt files
                path = self.paths[i] if self.paths else f"sample {i}"
                if path not in self.unreadable:
                    self.unreadable.add(path)
                    log.warning("unreadable image %s (%s): skipped; replace or delete the file", path, e)
        raise RuntimeError(f"100 consecutive unreadable images from index {index}; is the dataset corrupt?")


class FileImageDataModule(ImageDataModule):
    """Shared transforms and the missing-dataset message for on-disk datasets."""

    layout = ""  # what is expected under root, for the error message

    def transform(self, train: bool):
        a = self.augment
        if not train:
            return create_transform(self.image_size, is_training=False, interpolation=a.interpolation,
                                    crop_pct=a.crop_pct)
        return create_transform(
            self.image_size, is_training=True, scale=tuple(a.scale), ratio=tuple(a.ratio), hflip=a.hflip,
            auto_augment=a.auto_augment, interpolation=a.interpolation, re_prob=a.re_prob, re_mode=a.re_mode,
        )

    def not_found(self, detail: str = "") -> DatasetNotFoundError:
        download = "" if isinstance(self, ImageFolderDataModule) else (
            " or let torchvision fetch it there with data.download=true (needs network)")
        return DatasetNotFoundError(
            f"{self.name}: no dataset at data.root={self.root!r}{': ' + detail if detail else ''}. Expected "
            f"{self.layout}. Point data.root at a local copy{download}."
        )

    def split_train_val(self, train_full: Dataset, val_full: Dataset, n: int) -> tuple[Subset, Subset]:
        """A fixed random split of one training set into train / val, each with its own transform."""
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        n_val = max(1, int(round(n * self.val_fraction)))
        return Subset(train_full, order[n_val:]), Subset(val_full, order[:n_val])


class ImageFolderDataModule(FileImageDataModule):
    """ImageNet layout: ``root/train/<class>/*`` and ``root/val/<class>/*``; val is also the test split."""

    layout = "ImageNet layout: <root>/train/<class>/<image> and <root>/val/<class>/<image>"

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        root = Path(self.root or "")
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise self.not_found(f"{root / split} is missing")
        try:
            train = tvd.ImageFolder(str(root / "train"), transform=self.transform(True))
            val = tvd.ImageFolder(str(root / "val"), transform=self.transform(False))
        except FileNotFoundError as e:  # ImageFolder: "Couldn't find any class folder" / no valid files
            raise self.not_found(str(e)) from None
        if len(train.classes) != self.num_classes:
            log.warning("%s has %d classes, data.num_classes=%d", root / "train", len(train.classes), self.num_classes)
        self.train_set = SkipUnreadable(train, [p for p, _ in train.samples])
        self.val_set = self.test_set = SkipUnreadable(val, [p for p, _ in val.samples])


class TorchvisionDataModule(FileImageDataModule):
    """torchvision's cifar10, cifar100, pets (Oxford-IIIT) and flowers102, from a local copy at ``root``."""

    LAYOUTS = {
        "cifar10": "torchvision's CIFAR10 files (<root>/cifar-10-batches-py/)",
        "cifar100": "torchvision's CIFAR100 files (<root>/cifar-100-python/)",
        "pets": "torchvision's OxfordIIITPet files (<root>/oxford-iiit-pet/images, annotations)",
        "flowers102": "torchvision's Flowers102 files (<root>/flowers-102/jpg, imagelabels.mat, setid.mat)",
    }

    @property
    def layout(self) -> str:
        return self.LAYOUTS[self.name]

    def _make(self, split: str, train: bool) -> Dataset:
        t, root, dl = self.transform(train), self.root, self.download
        if self.name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if self.name == "cifar10" else tvd.CIFAR100
            return cls(root, train=split == "train", transform=t, download=dl)
        if self.name == "pets":
            return tvd.OxfordIIITPet(root, split="trainval" if split == "train" else "test", transform=t, download=dl)
        return tvd.Flowers102(root, split=split, transform=t, download=dl)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.name not in self.LAYOUTS:
            raise ValueError(f"unknown torchvision dataset {self.name!r}; valid: {', '.join(self.LAYOUTS)}")
        if not self.download and not (self.root and Path(self.root).is_dir()):
            raise self.not_found("the directory does not exist")
        try:
            self.test_set = self._make("test", train=False)
            if self.name == "flowers102":  # the only one with an official validation split
                self.train_set, self.val_set = self._make("train", True), self._make("val", False)
            else:
                full = self._make("train", True)
                self.train_set, self.val_set = self.split_train_val(full, self._make("train", False), len(full))
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True"
            raise self.not_found(str(e).split(".")[0]) from None
