"""Data modules: fixed splits, batch augmentation, on-disk layouts (uint8 from the workers, normalized on the
device), per-sample seeding, the dali backend's message, missing data and unreadable images."""

from __future__ import annotations

import random
import sys
import types
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from cvt_lab.config import AugmentConfig
from cvt_lab.data import (DatasetNotFoundError, DigitsDataModule, ImageFolderDataModule, SyntheticDataModule,
                          TorchvisionDataModule)
from cvt_lab.data.base import EpochRandomSampler, SeededSampler, derived_seed
from cvt_lab.data.dali import rand_augment_args
from cvt_lab.data.files import posterize
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
    """A tiny ImageNet-layout folder of JPEGs (odd sizes, as photos come)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (size + 3 * i, size + 5 * i, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.jpg", quality=90)


def folder_datamodule(root, **kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(name="imagenet", root=str(root), num_classes=2, image_size=32, batch_size=4, **kwargs)
    dm.setup()
    return dm


def test_imagefolder_loads_with_the_recipe_transforms(tmp_path):
    make_folder(tmp_path)
    dm = folder_datamodule(tmp_path, augment=AugmentConfig(auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25))
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,)
    assert "RandAugment" in repr(dm.train_set.dataset.transform)
    assert len(dm.test_set) == 6


def test_imagefolder_workers_hand_over_uint8_normalized_on_the_device_as_before(tmp_path):
    make_folder(tmp_path)
    dm = folder_datamodule(tmp_path, augment=AugmentConfig(auto_augment="rand-m9-mstd0.5-inc1"))
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        images, _ = next(iter(loader))
        assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    # The same image and seed through the former all-in-worker float transform: the same values.
    folder = dm.train_set.dataset
    image = folder.loader(folder.samples[1][0])
    for train in (True, False):
        torch.manual_seed(7), random.seed(7), np.random.seed(7)
        uint8 = dm.transform(train)(image)
        torch.manual_seed(7), random.seed(7), np.random.seed(7)
        floats = dm.transform(train, uint8=False)(image)
        normalized, _ = dm.on_after_batch_transfer((uint8[None], torch.zeros(1)), 0)
        assert normalized.dtype == torch.float32
        torch.testing.assert_close(normalized[0], floats, atol=1e-5, rtol=1e-5)


def test_training_images_depend_on_seed_epoch_and_index_only_so_workers_persist(tmp_path):
    make_folder(tmp_path)
    dm = folder_datamodule(tmp_path, augment=AugmentConfig(auto_augment="rand-m9-mstd0.5-inc1"), seed=3)
    in_process = next(iter(dm.train_dataloader()))
    workers = folder_datamodule(tmp_path, augment=AugmentConfig(auto_augment="rand-m9-mstd0.5-inc1"), seed=3,
                                num_workers=1)
    loader = workers.train_dataloader()
    assert loader.persistent_workers and not dm.train_dataloader().persistent_workers
    assert isinstance(loader.sampler, SeededSampler)
    from_worker = next(iter(loader))
    assert all(torch.equal(a, b) for a, b in zip(in_process, from_worker))


def test_lightning_trains_on_the_normalized_batches(tmp_path):
    make_folder(tmp_path)
    seen = []

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            seen.append(batch[0])
            return (batch[0].mean() * self.weight).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = ImageFolderDataModule(name="imagenet", root=str(tmp_path), num_classes=2, image_size=32, batch_size=4,
                               augment=AugmentConfig(re_prob=1.0))
    pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(Probe(), datamodule=dm)
    assert len(seen) == 2 and all(x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) for x in seen)
    assert all(x.min() < -1 and x.max() > 1 for x in seen)  # normalized (and erased with normal noise)


def test_randaugment_posterize_to_zero_bits_is_black_not_an_error():
    image = Image.fromarray(np.full((4, 4, 3), 200, np.uint8))
    assert np.asarray(posterize(image, 0)).max() == 0 and np.asarray(posterize(image, 2)).max() == 192


def test_dali_backend_without_dali_or_gpu_says_how_to_get_them(tmp_path, monkeypatch):
    make_folder(tmp_path, per_class=1)
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # importing it fails, as where it is not installed
    with pytest.raises(ValueError, match=r"not installed: pip install -e '\.\[dali\]'.*data.backend=torch"):
        folder_datamodule(tmp_path, backend="dali")
    monkeypatch.setitem(sys.modules, "nvidia", types.ModuleType("nvidia"))
    monkeypatch.setitem(sys.modules, "nvidia.dali", types.ModuleType("nvidia.dali"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs one: train with trainer=gpu"):
        folder_datamodule(tmp_path, backend="dali")
    with pytest.raises(ValueError, match="data.backend='dali' is not available for data=digits"):
        DigitsDataModule(name="digits", num_classes=10, backend="dali").setup()
    assert rand_augment_args("rand-m9-mstd0.5-inc1") == (2, 27)
    with pytest.raises(ValueError, match="RandAugment"):
        rand_augment_args("original")


def test_in_memory_batch_augmentation_is_a_function_of_seed_and_step():
    aug = AugmentConfig(hflip=0.5, affine_degrees=10, affine_translate=0.1, affine_scale=0.1, re_prob=0.5)
    dm = SyntheticDataModule(name="synthetic", num_classes=4, image_size=16, num_samples=8, augment=aug, seed=1)
    dm.setup()
    batch = dm.train_set.tensors

    def augmented(step: int) -> torch.Tensor:
        dm.trainer = SimpleNamespace(training=True, global_step=step, global_rank=0)
        return dm.on_after_batch_transfer(dm.on_before_batch_transfer(batch, 0), 0)[0]

    assert torch.equal(augmented(5), augmented(5)) and not torch.equal(augmented(5), augmented(6))
    dm.trainer = SimpleNamespace(training=False)
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], batch[0])  # evaluation: untouched


def test_unreadable_image_is_reported_by_path_and_skipped(tmp_path, caplog):
    make_folder(tmp_path, per_class=2)
    bad = tmp_path / "val" / "cat" / "0.jpg"
    bad.write_bytes(b"this is not a jpeg")
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


def test_loader_benchmark_reports_images_per_second_per_worker_count(tmp_path):
    from benchmarks.cvt_bench.loader import bench_loader

    make_folder(tmp_path)
    report = bench_loader(tmp_path, workers=[0], batch_size=2, image_size=16, batches=2, sample_images=2)
    assert set(report["loader"]) == {"uint8", "float"} and report["loader"]["uint8"]["0"]["images_per_s"] > 0
    assert set(report["per_image_ms"]) == {"decode", "transform_uint8", "transform_float"}


def test_an_image_folder_with_another_class_count_is_refused(tmp_path):
    """A 3-class folder with data.num_classes=1000 (imagefolder's default) would train to chance with a
    1000-class head: refused with the count to give."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog", "fox"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / split / cls / "a.png")
    dm = ImageFolderDataModule(name="imagefolder", root=str(tmp_path), num_classes=1000, image_size=16)
    with pytest.raises(ValueError, match=r"holds 3 classes \(cat, dog, fox\) and data.num_classes=1000: give "
                                         r"data.num_classes=3"):
        dm.setup("fit")
    ImageFolderDataModule(name="imagefolder", root=str(tmp_path), num_classes=3, image_size=16).setup("fit")
