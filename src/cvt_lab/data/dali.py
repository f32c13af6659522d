"""``data.backend=dali``: an ImageNet-layout folder read, JPEG-decoded and augmented on the GPU by NVIDIA DALI.

Optional: install with ``pip install -e '.[dali]'`` (CUDA 12 wheels). The pipeline mirrors the torch backend's
timm transforms with DALI's own operators: random resized crop (DALI's ``decoders.image_random_crop``, same
scale and ratio ranges), resize with the recipe's interpolation, flip, DALI's RandAugment for timm's
``rand-m<M>-n<N>`` strings (its own operation set, magnitude M of 10 mapped onto DALI's 30 bins; timm's
``mstd``/``inc`` refinements are not reproduced) or, without RandAugment, colour jitter as timm's 0.4;
evaluation resizes the shorter side to ``image_size / crop_pct`` and centre-crops. It hands over uint8 (C, H, W)
batches on the GPU, so the normalization and random erasing are the torch backend's (the datamodule's
``on_after_batch_transfer``). The order is seeded by the run's seed but a resumed run does not replay it as the
torch backend does. Written against DALI's documented API; not run in the project's CPU-only test environment.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from cvt_lab.config import AugmentConfig


def require_dali(trainer) -> None:
    """Raises ValueError (bad input: one message and the fix) unless DALI is importable and training runs on a GPU."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        raise ValueError("data.backend=dali needs NVIDIA DALI, which is not installed: pip install -e '.[dali]' "
                         "(CUDA 12 builds), or use data.backend=torch") from None
    device = trainer.strategy.root_device if trainer is not None else None
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        raise ValueError("data.backend=dali decodes images on the GPU and needs one: train with trainer=gpu, "
                         "or use data.backend=torch")


def rand_augment_args(auto_augment: str) -> tuple[int, int]:
    """timm's ``rand-m9-mstd0.5-inc1`` -> DALI's (n, m): n ops (timm's default 2), magnitude m of 30 from timm's
    m of 10."""
    if not auto_augment.startswith("rand"):
        raise ValueError(f"data.backend=dali supports RandAugment ('rand-m9-...') only, not "
                         f"recipe.augment.auto_augment={auto_augment!r}; use data.backend=torch")
    found = dict(re.findall(r"-(m|n)(\d+)", auto_augment))
    return int(found.get("n", 2)), min(round(int(found.get("m", 10)) * 3), 30)


class DaliLoader:
    """A Lightning-ready iterable over a DALI pipeline: (uint8 images, int64 labels) batches on the GPU."""

    def __init__(self, iterator):
        self.iterator = iterator

    def __len__(self) -> int:
        return len(self.iterator)

    def __iter__(self):
        for (out,) in self.iterator:  # one dict per pipeline; the iterator resets itself after an epoch
            yield out["images"], out["labels"].squeeze(-1).long()


def dali_loader(folder: Path, trainer, train: bool, batch_size: int, image_size: int, augment: AugmentConfig,
                num_threads: int, seed: int, drop_last: bool) -> DaliLoader:
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

    a = augment
    interp = {"bicubic": types.INTERP_CUBIC, "bilinear": types.INTERP_LINEAR, "nearest": types.INTERP_NN}.get(
        a.interpolation, types.INTERP_CUBIC)
    rand_augment = rand_augment_args(a.auto_augment) if train and a.auto_augment else None
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @pipeline_def(enable_conditionals=rand_augment is not None)
    def pipeline():
        jpegs, labels = fn.readers.file(file_root=str(folder), name="Reader", shard_id=rank, num_shards=world,
                                        shuffle_after_epoch=train, pad_last_batch=True)
        if train:
            images = fn.decoders.image_random_crop(jpegs, device="mixed", output_type=types.RGB,
                                                   random_area=list(a.scale), random_aspect_ratio=list(a.ratio))
            images = fn.resize(images, size=[image_size, image_size], interp_type=interp)
            if rand_augment is not None:
                from nvidia.dali.auto_aug import rand_augment as dali_rand_augment

                n, m = rand_augment
                images = dali_rand_augment.rand_augment(images, n=n, m=m, shape=[image_size, image_size])
            else:  # timm's default colour jitter (0.4) applies when RandAugment is off
                jitter = [0.6, 1.4]
                images = fn.color_twist(images, brightness=fn.random.uniform(range=jitter),
                                        contrast=fn.random.uniform(range=jitter),
                                        saturation=fn.random.uniform(range=jitter))
            mirror = fn.random.coin_flip(probability=a.hflip)
        else:
            images = fn.decoders.image(jpegs, device="mixed", output_type=types.RGB)
            images = fn.resize(images, resize_shorter=int(image_size / a.crop_pct), interp_type=interp)
            mirror = 0
        images = fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout="CHW",
                                          crop=(image_size, image_size), mirror=mirror)
        return images, labels.gpu()

    device_id = trainer.strategy.root_device.index if trainer is not None else 0
    pipe = pipeline(batch_size=batch_size, num_threads=num_threads, device_id=device_id or 0, seed=seed + rank)
    policy = LastBatchPolicy.DROP if drop_last else LastBatchPolicy.PARTIAL
    return DaliLoader(DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader", auto_reset=True,
                                          last_batch_policy=policy))
