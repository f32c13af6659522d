"""Input pipeline throughput: images/s the imagefolder training loader hands over, per worker count.

Two pipelines side by side on the same folder, recipe and batches:

- ``uint8`` (cvt_lab's): workers decode and augment to uint8 tensors; normalization and random erasing run on
  the batch's device (``on_after_batch_transfer``), timed apart as ``device_ms_per_batch``;
- ``float`` (the former one, and timm's default transform): workers also convert to float, normalize and erase.

``per_image_ms`` splits one image's CPU cost, in this process on one thread, into the JPEG decode and the
training transform of each pipeline. ``python -m benchmarks.cvt_bench.loader PATH`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from omegaconf import OmegaConf

from cvt_lab.config import AugmentConfig
from cvt_lab.data import ImageFolderDataModule
from cvt_lab.paths import config_dir


def recipe_augment(recipe: str = "imagenet") -> AugmentConfig:
    """The training augmentation of conf/recipe/<recipe>.yaml."""
    augment = OmegaConf.load(config_dir() / "recipe" / f"{recipe}.yaml").get("augment", {})
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AugmentConfig), augment))


def seconds_each(fn: Callable, items: Iterable, warmup: int = 3) -> float:
    items = list(items)
    for x in items[:warmup]:
        fn(x)
    start = time.perf_counter()
    for x in items:
        fn(x)
    return (time.perf_counter() - start) / len(items)


def datamodule(root: str, workers: int, batch_size: int, image_size: int, augment: AugmentConfig,
               pipeline: str) -> ImageFolderDataModule:
    classes = sum(d.is_dir() for d in (Path(root) / "train").iterdir())
    dm = ImageFolderDataModule(name="bench", root=str(root), num_classes=classes, batch_size=batch_size,
                               image_size=image_size, augment=augment, num_workers=workers)
    dm.setup()
    if pipeline == "float":
        dm.train_set.dataset.transform = dm.transform(train=True, uint8=False)
    return dm


def loader_throughput(dm: ImageFolderDataModule, batches: int) -> float:
    """Images/s over ``batches`` batches after the first (which pays for starting the workers), across epochs."""
    loader = dm.train_dataloader()

    def stream():
        while True:  # epoch after epoch: the persistent workers carry on
            yield from loader

    batches_iter = stream()
    next(batches_iter)
    images, start = 0, time.perf_counter()
    for _, (x, _) in zip(range(batches), batches_iter):
        images += x.shape[0]
    return images / (time.perf_counter() - start)


def bench_loader(root: str | Path, workers: list[int], batch_size: int = 64, image_size: int = 224, batches: int = 20,
                 augment: AugmentConfig | None = None, pipelines: tuple[str, ...] = ("uint8", "float"),
                 sample_images: int = 60, device: str = "cpu") -> dict:
    """Images/s of the training loader over the imagefolder ``root`` per worker count and pipeline, the
    per-image decode and transform cost, and the batch's normalization and erasing on ``device``.
    ``augment`` defaults to the imagenet recipe's."""
    augment = augment or recipe_augment()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per core, as a loader worker runs (workers=0: the training process's share)
    try:
        dm = datamodule(root, 0, batch_size, image_size, augment, "uint8")
        folder = dm.train_set.dataset
        paths = [p for p, _ in folder.samples][:sample_images]
        decoded = [folder.loader(p) for p in paths]
        per_image_ms = {
            "decode": 1e3 * seconds_each(folder.loader, paths),
            "transform_uint8": 1e3 * seconds_each(folder.transform, decoded),
            "transform_float": 1e3 * seconds_each(dm.transform(train=True, uint8=False), decoded),
        }
        batch = [t.to(device) for t in next(iter(dm.train_dataloader()))]

        def on_device(b):
            dm.random_erasing(dm.on_after_batch_transfer(b, 0)[0])
            if batch[0].is_cuda:
                torch.cuda.synchronize()

        device_s = seconds_each(on_device, [batch] * 5)
        loader = {}
        for pipeline in pipelines:
            loader[pipeline] = {}
            for w in workers:
                rate = loader_throughput(datamodule(root, w, batch_size, image_size, augment, pipeline), batches)
                loader[pipeline][str(w)] = {"images_per_s": round(rate, 1), "per_worker": round(rate / max(w, 1), 1)}
    finally:
        torch.set_num_threads(threads)
    return {
        "root": str(root),
        "train_images": len(folder),
        "batch_size": batch_size,
        "image_size": image_size,
        "augment": {"auto_augment": augment.auto_augment, "re_prob": augment.re_prob, "hflip": augment.hflip},
        "per_image_ms": {k: round(v, 2) for k, v in per_image_ms.items()},
        "device_ms_per_batch": round(1e3 * device_s, 2),  # normalize + random erasing of one uint8 batch
        "device": device,
        "loader": loader,
        "cpu_cores": torch.multiprocessing.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cvt_bench.loader", description=__doc__.split("\n")[0])
    p.add_argument("root", help="an ImageNet-layout folder: ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--recipe", default="imagenet", help="whose augmentation to apply (conf/recipe/)")
    p.add_argument("--device", default="cpu", help="where the batch is normalized and erased (cuda: the GPU's cost)")
    args = p.parse_args(argv)
    if not (Path(args.root) / "train").is_dir():
        p.error(f"{args.root}/train is missing: give an ImageNet-layout folder")
    print(json.dumps(bench_loader(args.root, args.workers, args.batch, args.size, args.batches,
                                  recipe_augment(args.recipe), device=args.device), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
