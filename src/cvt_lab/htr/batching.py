"""Variable-width lines in batches: aspect-preserving resize to a fixed height, right padding to the batch's widest
line (zero: the background, ink is 1), a width-bucketing batch sampler, and handwriting augmentation."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from cvt_lab.htr.charset import Charset


def resize_to_height(image: torch.Tensor, height: int) -> torch.Tensor:
    """(C, h, w) -> (C, height, round(w * height / h)): the line's aspect ratio kept (never squashed to a box)."""
    h, w = image.shape[-2:]
    if h == height:
        return image
    width = max(1, round(w * height / h))
    return F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False,
                         antialias=height < h)[0]


def pad_lines(lines: Sequence[torch.Tensor], min_width: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, w) lines -> (B, C, H, W_max) right-padded with background (0), and their widths (B,), a line
    narrower than ``min_width`` counted as that wide (padded to it)."""
    widths = torch.tensor([max(line.shape[-1], min_width) for line in lines])
    c, h = lines[0].shape[:2]
    images = torch.zeros(len(lines), c, h, int(widths.max()))
    for i, line in enumerate(lines):
        images[i, :, :, :line.shape[-1]] = line
    return images, widths


@dataclass
class LineBatch:
    images: torch.Tensor  # (B, C, H, W_max), zero right padding
    widths: torch.Tensor  # (B,) valid pixel columns
    targets: torch.Tensor  # (sum of lengths,) class indices, concatenated (CTCLoss's 1-d form)
    target_lengths: torch.Tensor  # (B,)
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)


class LineCollate:
    """A list of (image (C, H, w), text) -> :class:`LineBatch`, padded to the widest line; ``min_width``: narrower
    lines are padded to it (the model's strides need that many columns)."""

    def __init__(self, charset: Charset, min_width: int = 1):
        self.charset, self.min_width = charset, min_width

    def __call__(self, items: Sequence[tuple[torch.Tensor, str]]) -> LineBatch:
        images, widths = pad_lines([img for img, _ in items], self.min_width)
        encoded = [self.charset.encode(t) for _, t in items]
        return LineBatch(images, widths, torch.tensor([i for e in encoded for i in e], dtype=torch.long),
                         torch.tensor([len(e) for e in encoded]), [t for _, t in items])


class _SetEpoch:
    """What Lightning tells the epoch: a batch sampler's ``.sampler`` (``lightning.fabric.utilities.data.
    _set_sampler_epoch`` never calls the batch sampler's own ``set_epoch``)."""

    def __init__(self, batch_sampler: BucketBatchSampler):
        self.batch_sampler = batch_sampler

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of lines of similar width, so little of a batch is padding: the lines sorted by width (ties and, in
    training, the order within buckets of ``bucket`` batches shuffled), cut into batches, the batches shuffled.
    The order is a function of (seed, epoch) alone: Lightning sets the epoch through ``sampler``."""

    def __init__(self, widths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 bucket: int = 8):
        self.widths, self.batch_size, self.shuffle = list(widths), batch_size, shuffle
        self.seed, self.drop_last, self.bucket, self.epoch = seed, drop_last, bucket, 0
        self.sampler = _SetEpoch(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = sorted(range(len(self.widths)), key=lambda i: (self.widths[i], rng.random() if self.shuffle else i))
        if self.shuffle:  # some mixing of widths within a bucket, so batches are not the same every epoch
            span = self.batch_size * self.bucket
            for s in range(0, len(order), span):
                chunk = order[s:s + span]
                rng.shuffle(chunk)
                order[s:s + span] = sorted(chunk, key=lambda i: self.widths[i] // 8)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.widths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


@dataclass
class LineAugment:
    """Handwriting augmentation of one line (C, H, W), ink 1 on 0: a small affine warp (slant/shear, rotation, scale,
    shift), an elastic warp, and erosion or dilation (thinner or thicker strokes), each with probability ``p``."""

    p: float = 0.5
    shear: float = 0.2  # slant, tan of the angle
    degrees: float = 2.0
    scale: float = 0.08
    elastic_alpha: float = 2.5  # largest displacement in pixels (of a 32 px line: more warps digits into others)
    elastic_sigma: float = 4.0  # smoothness of the displacement field in pixels

    def __call__(self, image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        def chance() -> bool:
            return float(torch.rand((), generator=gen)) < self.p

        def uniform(a: float) -> float:
            return (float(torch.rand((), generator=gen)) * 2 - 1) * a

        c, h, w = image.shape
        theta = None
        if chance():  # affine in normalized coordinates; x is scaled by w/h so the shear is in pixels of height
            a = math.radians(uniform(self.degrees))
            s = 1 + uniform(self.scale)
            k = uniform(self.shear) * h / w
            theta = torch.tensor([[math.cos(a) / s, -math.sin(a) * h / w / s + k, 0.0],
                                  [math.sin(a) * w / h / s, math.cos(a) / s, uniform(0.1)]])
        grid = F.affine_grid((theta if theta is not None else torch.eye(2, 3))[None], [1, c, h, w],
                             align_corners=False)
        warped = theta is not None
        if chance():
            noise = torch.rand(1, 2, h, w, generator=gen) * 2 - 1
            k = int(2 * round(2 * self.elastic_sigma) + 1)
            x = torch.arange(k) - k // 2
            g = torch.exp(-x.float() ** 2 / (2 * self.elastic_sigma ** 2))
            g = g / g.sum()
            noise = F.conv2d(noise.reshape(2, 1, h, w), g.view(1, 1, 1, k), padding=(0, k // 2))
            noise = F.conv2d(noise, g.view(1, 1, k, 1), padding=(k // 2, 0)).reshape(1, 2, h, w)
            noise = noise / noise.abs().amax().clamp_min(1e-6) * self.elastic_alpha
            grid = grid + noise.permute(0, 2, 3, 1) * torch.tensor([2 / w, 2 / h])
            warped = True
        if warped:
            image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        if chance():  # half-strength 3x3 max (min) filter: strokes a pixel thicker (thinner) without vanishing
            dilate = chance()
            pooled = F.max_pool2d(image if dilate else -image, 3, 1, 1) * (1 if dilate else -1)
            image = 0.5 * (image + pooled)
        return image
