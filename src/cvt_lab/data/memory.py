"""In-memory datasets: scikit-learn's digits (the offline default) and synthetic images.

They are small enough to keep as one preprocessed tensor, so augmentation runs per batch after the
batch reaches the device (random affine jitter, timm's RandomErasing), not per image in Python: the
training step waits for no data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from cvt_lab.data.base import ImageDataModule


def random_affine(images: torch.Tensor, degrees: float, translate: float, scale: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of a (B, C, H, W) batch rotated by up to ``degrees``, shifted by up to ``translate`` of its
    size and zoomed by up to ``scale``, independently; pixels from outside are the batch's minimum (background).

    The parameters are drawn on the batch's device (or the generator's): on a GPU the step never waits for a
    host-to-device copy."""
    b = images.shape[0]
    device = generator.device if generator is not None else images.device
    # One draw in the order angle, zoom, x shift, y shift (on the CPU: the same numbers as four draws).
    u = (torch.rand(4, b, generator=generator, device=device) * 2 - 1).to(images.device, images.dtype)
    angle, zoom = u[0] * math.radians(degrees), 1 + u[1] * scale
    shift_x, shift_y = u[2] * (2 * translate), u[3] * (2 * translate)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    background = images.amin()
    return F.grid_sample(images - background, grid, align_corners=False) + background


class TensorImageDataModule(ImageDataModule):
    """An ImageDataModule over preprocessed (N, C, H, W) tensors with batch-level augmentation."""

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not self.training:
            return batch
        images, labels = batch
        a = self.augment
        if a.affine_degrees or a.affine_translate or a.affine_scale:
            images = random_affine(images, a.affine_degrees, a.affine_translate, a.affine_scale)
        if a.hflip > 0:
            flip = torch.rand(images.shape[0], device=images.device) < a.hflip
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return self.random_erasing(images), labels

    def _to_model_input(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) in [0, 1] -> (N, in_chans, image_size, image_size), normalized to [-1, 1]."""
        images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        if images.shape[1] != self.in_chans:
            images = images.expand(-1, self.in_chans, -1, -1)
        return ((images - 0.5) / 0.5).contiguous()


def digits_splits(split_seed: int) -> tuple[torch.Tensor, torch.Tensor, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """scikit-learn's 1,797 handwritten digits as (N, 1, 8, 8) images in [0, 1], their labels, and the indices of
    the fixed stratified 70/10/20 train / val / test split (a function of ``split_seed`` alone)."""
    x, y = load_digits(return_X_y=True)
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    index = np.arange(len(y))
    train, test = train_test_split(index, test_size=0.2, stratify=y, random_state=split_seed)
    train, val = train_test_split(train, test_size=0.125, stratify=y[train], random_state=split_seed)
    return images, torch.tensor(y), (train, val, test)


class DigitsDataModule(TensorImageDataModule):
    """scikit-learn's 1,797 handwritten digits, split 70/10/20 (train/val/test), stratified and fixed."""

    def load(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        images, labels, splits = digits_splits(self.split_seed)
        images = self._to_model_input(images)
        return tuple(TensorDataset(images[i], labels[i]) for i in splits)


class SyntheticDataModule(TensorImageDataModule):
    """Random images whose class is a fixed random pattern plus noise: learnable, instant, no files."""

    def load(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        g = torch.Generator().manual_seed(self.split_seed)
        n = self.num_samples or 512
        patterns = torch.rand(self.num_classes, 1, 8, 8, generator=g)

        def split(count: int) -> TensorDataset:
            labels = torch.randint(self.num_classes, (count,), generator=g)
            images = (patterns[labels] + 0.3 * torch.randn(count, 1, 8, 8, generator=g)).clamp(0, 1)
            return TensorDataset(self._to_model_input(images), labels)

        return split(n), split(max(n // 4, 1)), split(max(n // 4, 1))
