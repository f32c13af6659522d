"""Datasets read from disk: an ImageNet-layout folder and torchvision's CIFAR, Pets and Flowers.

Loader workers decode and augment each image with timm's ``create_transform`` (bicubic random resized crop,
flip, RandAugment for training; resize + centre crop by ``crop_pct`` for evaluation), configured by the recipe,
and hand over uint8 tensors: a quarter of the bytes of floats to collate, pin and copy. The float conversion,
normalization and random erasing run on the batch after it reaches the device (``on_after_batch_transfer``),
as timm's own prefetching loader does: on the GPU under ``trainer=gpu``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision.datasets as tvd
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.auto_augment import RandAugment
from timm.data.auto_augment import posterize as timm_posterize
from torch.utils.data import Dataset, Subset

from cvt_lab.data.base import DatasetNotFoundError, ImageDataModule
from cvt_lab.data.dali import dali_loader, require_dali

log = logging.getLogger(__name__)


def posterize(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's posterize, keeping 0 bits as the black image that RandAugment's strongest posterize means:
    Pillow >= 13 refuses 0 bits, and the error would pass for an unreadable image."""
    if bits_to_keep < 1:
        return Image.new(img.mode, img.size)
    return timm_posterize(img, bits_to_keep, **kwargs)


def with_black_posterize(transform):
    """``transform`` with its RandAugment's posterize ops using :func:`posterize`."""
    for t in getattr(transform, "transforms", []):
        for op in t.ops if isinstance(t, RandAugment) else []:
            if op.aug_fn is timm_posterize:
                op.aug_fn = posterize
    return transform


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
    augments_per_image = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # In 0-255 units, so that the uint8 batch is normalized in one subtract and one divide.
        self.mean = torch.tensor(IMAGENET_DEFAULT_MEAN).mul(255).view(1, -1, 1, 1)
        self.std = torch.tensor(IMAGENET_DEFAULT_STD).mul(255).view(1, -1, 1, 1)

    def transform(self, train: bool, uint8: bool = True):
        """timm's transform up to a uint8 (C, H, W) tensor; the rest is :meth:`on_after_batch_transfer`'s.
        ``uint8=False``: timm's whole transform in the worker (float, normalized, erased), for comparison."""
        a = self.augment
        if not train:
            return create_transform(self.image_size, is_training=False, interpolation=a.interpolation,
                                    crop_pct=a.crop_pct, normalize=not uint8)
        return with_black_posterize(create_transform(
            self.image_size, is_training=True, scale=tuple(a.scale), ratio=tuple(a.ratio), hflip=a.hflip,
            auto_augment=a.auto_augment, interpolation=a.interpolation, normalize=not uint8,
            re_prob=0 if uint8 else a.re_prob, re_mode=a.re_mode,
        ))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        if self.mean.device != images.device:  # moved once, not copied every step
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        images = images.float().sub_(self.mean).div_(self.std)
        return (self.random_erasing(images) if self.training else images), labels

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
    """ImageNet layout: ``root/train/<class>/*`` and ``root/val/<class>/*``; val is also the test split.

    ``backend="dali"`` decodes and augments on the GPU with NVIDIA DALI instead of in loader workers.
    """

    backends = ("torch", "dali")

    layout = "ImageNet layout: <root>/train/<class>/<image> and <root>/val/<class>/<image>"

    def load(self) -> tuple[Dataset | Path, Dataset | Path, Dataset | Path]:
        root = Path(self.root or "")
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise self.not_found(f"{root / split} is missing")
        # the classes as ImageFolder (and DALI) find them: the sorted class directories of train/
        classes = sorted(e.name for e in (root / "train").iterdir() if e.is_dir())
        if classes and len(classes) != self.num_classes:  # a head of another size would train to chance, silently
            shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
            raise ValueError(f"{self.name}: {root / 'train'} holds {len(classes)} classes ({shown}) and "
                             f"data.num_classes={self.num_classes}: give data.num_classes={len(classes)}, or point "
                             "data.root at the dataset the run is meant for")
        if self.backend == "dali":  # DALI lists and reads the folders itself
            require_dali(self.trainer)
            return root / "train", root / "val", root / "val"
        try:
            train = tvd.ImageFolder(str(root / "train"), transform=self.transform(True))
            val = tvd.ImageFolder(str(root / "val"), transform=self.transform(False))
        except FileNotFoundError as e:  # ImageFolder: "Couldn't find any class folder" / no valid files
            raise self.not_found(str(e)) from None
        val = SkipUnreadable(val, [p for p, _ in val.samples])
        return SkipUnreadable(train, [p for p, _ in train.samples]), val, val

    def _loader(self, dataset: Dataset | Path, train: bool):
        if self.backend != "dali":
            return super()._loader(dataset, train)
        return dali_loader(dataset, self.trainer, train=train,
                           batch_size=self.batch_size if train else self.eval_batch_size, image_size=self.image_size,
                           augment=self.augment, num_threads=max(self.num_workers, 1),
                           seed=self.seed, drop_last=train and self.drop_last)


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

    def load(self) -> tuple[Dataset, Dataset, Dataset]:
        if self.name not in self.LAYOUTS:
            raise ValueError(f"unknown torchvision dataset {self.name!r}; valid: {', '.join(self.LAYOUTS)}")
        if not self.download and not (self.root and Path(self.root).is_dir()):
            raise self.not_found("the directory does not exist")
        try:
            test = self._make("test", train=False)
            if self.name == "flowers102":  # the only one with an official validation split
                return self._make("train", True), self._make("val", False), test
            full = self._make("train", True)
            return *self.split_train_val(full, self._make("train", False), len(full)), test
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True"
            raise self.not_found(str(e).split(".")[0]) from None
