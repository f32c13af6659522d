"""Data modules: fixed splits, batch augmentation, on-disk layouts, missing data and unreadable images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cvt_lab.config import AugmentConfig
from cvt_lab.data import (DatasetNotFoundError, DigitsDataModule, ImageFolderDataModule, SyntheticDataModule,
                          TorchvisionDataModule)
from cvt_lab.data.base import EpochRandomSampler, derived_seed
from cvt_lab.data.memory import random_affine


def test_digits_split_is_fixed_stratified_and_sized_for_the_model():
    dm = DigitsDataModule(name="digits", num_classes=10, image_size=32, batch_size=64)
    dm.setup()
    sizes = [len(s) for s in (dm.train_set, dm.val_set, dm.test_set)]
    assert sum(sizes) == 1797 and sizes == [1257, 180, 360]
    images, labels = dm.test_set.tensors
    assert images.shape == (360, 3, 32, 32) and -1.0 <= images.min() and images.max() <= 1.0
    assert torch.bincount(labels, minlength=10).min() >= 35  # stratified: every digit ~36 times
    again = DigitsDataModule(name="digits", num_classes=10, image_size=32)
    again.setup()
    assert torch.equal(again.test_set.tensors[1], labels)


def test_synthetic_data_is_deterministic_and_learnable_shape():
    a = SyntheticDataModule(name="synthetic", num_classes=4, image_size=16, num_samples=40)
    b = SyntheticDataModule(name="synthetic", num_classes=4, image_size=16, num_samples=40)
    a.setup(), b.setup()
    assert len(a.train_set) == 40 and len(a.val_set) == 10
    assert torch.equal(a.train_set.tensors[0], b.train_set.tensors[0])


def test_random_affine_moves_each_image_independently_and_keeps_shape():
    images = torch.zeros(8, 3, 32, 32) - 1
    images[:, :, 12:20, 12:20] = 1
    out = random_affine(images, degrees=10, translate=0.2, scale=0.1, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert not torch.allclose(out[0], out[1])  # independent parameters per image
    assert out.min() >= -1 - 1e-5  # background stays background
    same = random_affine(images, 0, 0, 0)
    assert torch.allclose(same, images, atol=1e-5)


def test_training_order_depends_on_seed_and_epoch_only():
    data = list(range(50))
    epoch = {"n": 0}
    sampler = EpochRandomSampler(data, seed=3, epoch=lambda: epoch["n"])
    first, first_again = list(sampler), list(sampler)
    epoch["n"] = 1
    second = list(sampler)
    assert first == first_again and first != second and sorted(second) == data
    assert list(EpochRandomSampler(data, seed=4, epoch=lambda: 0)) != first
    assert derived_seed(1, 2) != derived_seed(2, 1)


def make_folder(root, classes=("cat", "dog"), per_class=3, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")


def test_imagefolder_loads_with_the_recipe_transforms(tmp_path):
    make_folder(tmp_path)
    aug = AugmentConfig(auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
    dm = ImageFolderDataModule(name="imagenet", root=str(tmp_path), num_classes=2, image_size=32, batch_size=4,
                               augment=aug)
    dm.setup()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,)
    assert "RandAugment" in repr(dm.train_set.dataset.transform)
    assert "RandomErasing" in repr(dm.train_set.dataset.transform)
    assert len(dm.test_set) == 6


def test_unreadable_image_is_reported_by_path_and_skipped(tmp_path, caplog):
    make_folder(tmp_path, per_class=2)
    bad = tmp_path / "val" / "cat" / "0.png"
    bad.write_bytes(b"this is not a png")
    dm = ImageFolderDataModule(name="imagenet", root=str(tmp_path), num_classes=2, image_size=32, batch_size=4)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch[0].shape[0] == 4
    assert str(bad) in caplog.text and str(bad) in dm.val_set.unreadable


def test_missing_or_empty_dataset_says_what_was_expected(tmp_path):
    dm = ImageFolderDataModule(name="imagenet", root=str(tmp_path / "nope"), num_classes=2)
    with pytest.raises(DatasetNotFoundError, match=r"Expected ImageNet layout: <root>/train/<class>"):
        dm.setup()
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    with pytest.raises(DatasetNotFoundError, match="Point data.root at a local copy"):
        ImageFolderDataModule(name="imagenet", root=str(tmp_path / "empty"), num_classes=2).setup()
    with pytest.raises(DatasetNotFoundError, match=r"cifar-10-batches-py.*data.download=true"):
        TorchvisionDataModule(name="cifar10", root=str(tmp_path / "missing"), num_classes=10).setup()
    (tmp_path / "pets").mkdir()
    with pytest.raises(DatasetNotFoundError, match="oxford-iiit-pet"):
        TorchvisionDataModule(name="pets", root=str(tmp_path / "pets"), num_classes=37).setup()
