"""What a job costs: its data's size, its model's speed on its device (a short measured step, or a benchmark's
recorded throughput scaled by multiply-adds), and the time of its training and evaluation."""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cvt_lab.building import image_size_of  # the job's own, so that the estimate sizes what the job runs

# Published sizes (train, val, test) of the datasets cvt_lab reads from files, for when no copy is at data.root.
# val None: held out of the training split by data.val_fraction (ImageNet's val set doubles as its test set).
PUBLISHED_SIZES: dict[str, tuple[int, int | None, int]] = {
    "imagenet": (1_281_167, 50_000, 50_000),
    "cifar10": (50_000, None, 10_000),
    "cifar100": (50_000, None, 10_000),
    "pets": (3_680, None, 3_669),
    "flowers102": (1_020, 1_020, 6_149),
    "iam_lines": (6_482, 976, 2_915),  # IAM handwritten lines, the Aachen (RWTH) split
}
PRECISIONS = {"32-true": "fp32", "32": "fp32", "bf16-mixed": "bf16", "bf16": "bf16", "16-mixed": "fp16"}


@dataclass
class DataSize:
    train: int
    val: int
    test: int
    source: str  # where the numbers come from


@dataclass
class Speed:
    """Seconds per image on one device, training and inference."""

    train_s: float
    infer_s: float
    source: str


@dataclass
class Device:
    kind: str  # "cpu" | "cuda"
    count: int  # devices per job (trainer.devices x trainer.num_nodes)
    precision: str  # fp32 | bf16 | fp16


def device_of(cfg: DictConfig, visible_gpus: int) -> Device:
    kind = "cuda" if str(cfg.trainer.accelerator) in ("gpu", "cuda") else "cpu"
    devices = cfg.trainer.devices
    per_node = visible_gpus if devices in (-1, "-1", "auto") and kind == "cuda" else devices
    count = len(per_node) if isinstance(per_node, Sequence) and not isinstance(per_node, str) else int(per_node or 1)
    precision = PRECISIONS.get(str(cfg.trainer.precision), str(cfg.trainer.precision))
    return Device(kind, max(1, count) * int(cfg.trainer.num_nodes), precision)




# ------------------------------------------------------------------------------------------------- data


def data_size(cfg: DictConfig) -> DataSize:
    """The job's train / val / test sizes: in-memory data counted by its own data module; image folders counted
    on disk; otherwise the dataset's published size (the source says which)."""
    from hydra.utils import instantiate

    data = cfg.data
    root = Path(str(data.root)) if data.get("root") else None
    if is_line_data(cfg) and (root is None or not (root / "train.txt").is_file()) and data.name not in PUBLISHED_SIZES:
        return DataSize(int(data.train_lines), int(data.val_lines), int(data.test_lines), f"{data.name}: its config")
    if is_line_data(cfg) and root is not None and (root / "train.txt").is_file():
        sizes = [sum(1 for line in (root / f"{s}.txt").read_text().splitlines() if line.strip())
                 if (root / f"{s}.txt").is_file() else 0 for s in ("train", "val", "test")]
        return DataSize(*sizes, f"{data.name}: lines listed in {root}")
    if root is None:  # data made in memory (digits, synthetic, ...): its own data module makes and counts it
        train, val, test = instantiate(data, image_size=image_size_of(cfg)).load()
        return DataSize(len(train), len(val), len(test), f"{data.name}: counted in memory")
    if str(data._target_).endswith("ImageFolderDataModule") and (root / "train").is_dir():
        train, val = count_images(root / "train"), count_images(root / "val")
        return DataSize(train, val, val, f"{data.name}: image files counted in {root}")
    if data.name in PUBLISHED_SIZES:
        train, val, test = PUBLISHED_SIZES[data.name]
        if val is None:
            val = max(1, round(train * float(data.val_fraction)))
            train -= val
        where = f"no copy at data.root={root}" if not root.exists() else f"not counted in {root}"
        return DataSize(train, val, test, f"{data.name}: the published size ({where})")
    raise ValueError(f"data={data.name}: its size is not known to the plan; point data.root at a local copy")


def is_line_data(cfg: DictConfig) -> bool:
    """Text lines (cvt_lab.htr): sized by the lines' mean width (data.mean_aspect x height), not square images."""
    return str(cfg.data.get("_target_", "")).startswith("cvt_lab.htr.")


def line_width_of(cfg: DictConfig) -> int | None:
    return round(image_size_of(cfg) * float(cfg.data.mean_aspect)) if is_line_data(cfg) else None


def count_images(folder: Path) -> int:
    """Image files under ``folder`` (one level of class folders, with the suffixes ImageFolder reads)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    total = 0
    for entry in os.scandir(folder):
        if entry.is_dir():
            total += sum(1 for f in os.scandir(entry.path) if Path(f.name).suffix.lower() in IMG_EXTENSIONS)
    return total


# ------------------------------------------------------------------------------------------------ speed


def macs_of(cfg: DictConfig) -> int:
    """Multiply-adds of one image through the job's model at its size (counted on the meta device)."""
    import torch
    from hydra.utils import instantiate

    from cvt_lab.complexity import count

    with torch.device("meta"):
        model = instantiate(cfg.model, **({"num_classes": 100} if is_line_data(cfg) else {}))
    return count(model, image_size_of(cfg), in_chans=cfg.model.in_chans, width=line_width_of(cfg)).macs


def read_benchmarks(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The recorded throughputs of ``python -m benchmarks.cvt_bench`` runs: per file, its device, model, size,
    MACs and images/s per precision (cvt_lab's side of the comparison)."""
    found = []
    for path in paths:
        try:
            bench = json.loads(Path(path).read_text())
            kind = "cuda" if str(bench["meta"]["device"]).startswith("cuda") else "cpu"
            entry = {"path": relative(Path(path)), "device": kind,
                     "model": bench["config"]["model"], "image_size": int(bench["config"]["image_size"]),
                     "macs": int(bench["complexity"]["ours"]["macs"]),
                     "images_per_s": {p: {mode: float(v["ours"][mode]["images_per_s"]) for mode in ("train", "infer")}
                                      for p, v in bench["throughput"].items()}}
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a cvt_bench result (another benchmark's file)
        found.append(entry)
    return found


def relative(path: Path) -> str:
    """A path as the user would type it here: relative to the working directory when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def benchmark_speed(benchmarks: list[dict[str, Any]], device: Device, macs: int) -> Speed | None:
    """The job's speed from a benchmark on its kind of device and precision, scaled by the job's MACs per image
    (cvt_lab's time per image grows with its MACs: x7.4 for x7.4 from 160 to 384 px). A reduced precision (bf16,
    fp16) that no benchmark on the device measured takes fp32's speed, said in the source: an upper bound on the
    time rather than none (autocast runs the matmuls faster than fp32)."""
    fallback = ("fp32",) if device.precision in ("bf16", "fp16") else ()
    for precision in (device.precision, *fallback):
        for bench in benchmarks:
            speed = bench["images_per_s"].get(precision)
            if bench["device"] == device.kind and speed:
                ratio = macs / bench["macs"]
                # far smaller models run far below the benchmarked one's efficiency (small kernels, overheads)
                rough = "; a much smaller model: too low, --measure times it" if ratio < 0.1 else ""
                upper = (f"; {device.precision} not benchmarked on {device.kind}: fp32's speed, an upper bound on "
                         "the time" if precision != device.precision else "")
                return Speed(ratio / speed["train"], ratio / speed["infer"],
                             f"benchmark {bench['path']}: {bench['model']}@{bench['image_size']} {precision} on "
                             f"{device.kind}, x{ratio:.3g} its MACs{rough}{upper}")
    return None


def measure_speed(cfg: DictConfig, device: Device, steps: int = 3) -> Speed:
    """Time ``steps`` training steps (forward, backward, AdamW) and inferences at the job's batch size, size,
    precision and threads on the device it runs on, after two warm-ups each; random images."""
    import torch
    from hydra.utils import instantiate

    if device.kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("--measure times each job on its own device, a CUDA GPU, and torch finds none here: run the "
                         "plan on the GPU machine, or drop --measure (benchmark throughput)")
    target = torch.device("cuda" if device.kind == "cuda" else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(device.precision)
    batch, size = int(cfg.recipe.batch_size), image_size_of(cfg)
    lines = is_line_data(cfg)
    model = instantiate(OmegaConf.merge(cfg.model, {"compile": False}, {"num_classes": 100} if lines else {}))
    model = model.to(target)
    images = torch.randn(batch, cfg.model.in_chans, size, line_width_of(cfg) or size, device=target)
    labels = torch.randint(100 if lines else int(cfg.model.num_classes), (batch,), device=target)

    def loss_of(logits: torch.Tensor) -> torch.Tensor:  # a line's frames: their mean (the CTC loss costs ~nothing)
        return torch.nn.functional.cross_entropy(logits.mean(1) if lines else logits, labels)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(train: bool) -> None:
        with torch.autocast(target.type, dtype=dtype, enabled=dtype is not None):
            if train:
                loss = loss_of(model(images))
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            else:
                with torch.no_grad():
                    model(images)

    def seconds_per_image(train: bool) -> float:
        model.train(train)
        times = []
        for _ in range(steps + 2):  # two warm-ups (kernel selection, allocator), then the median step
            if target.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(train)
            if target.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times[2:]) / batch

    threads = torch.get_num_threads()
    if target.type == "cpu" and cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))  # the job's own threads
    try:
        train_s, infer_s = seconds_per_image(True), seconds_per_image(False)
        where = (f"cpu, {torch.get_num_threads()} thread(s)" if target.type == "cpu"
                 else f"cuda ({torch.cuda.get_device_name(target)})")
    finally:
        torch.set_num_threads(threads)
    return Speed(train_s, infer_s, f"measured: median of {steps} steps of batch {batch} at {size} px, "
                                   f"{device.precision} on {where}")


# ------------------------------------------------------------------------------------------------- time


def batches(n: int, batch: int, drop_last: bool, limit: Any) -> int:
    """Batches a loader gives per epoch, after Lightning's ``limit_*_batches`` (an int, or a fraction)."""
    full = n // batch if drop_last else math.ceil(n / batch)
    if limit is None:
        return full
    return min(full, int(limit)) if isinstance(limit, int) and not isinstance(limit, bool) else int(full * float(limit))


@dataclass
class Work:
    """What one job computes: training images and evaluated images per device, and epochs."""

    train_images: int
    eval_images: int
    epochs: int
    steps: int


def work_of(cfg: DictConfig, size: DataSize, device: Device) -> Work:
    """The images one device of the job trains and evaluates (its share under data parallelism): epochs of the
    training split (or recipe.max_steps), validation after each epoch, one test pass."""
    recipe, trainer = cfg.recipe, cfg.trainer
    batch = int(recipe.batch_size)
    eval_batch = int(cfg.data.eval_batch_size or batch)
    drop_last = recipe.mixup > 0 or recipe.cutmix > 0
    per_epoch = max(1, batches(math.ceil(size.train / device.count), batch, drop_last, trainer.limit_train_batches))
    steps = int(recipe.max_steps) if recipe.max_steps and recipe.max_steps > 0 else per_epoch * int(recipe.epochs)
    epochs = math.ceil(steps / per_epoch)
    val = batches(math.ceil(size.val / device.count), eval_batch, False, trainer.limit_val_batches) * eval_batch
    test = batches(math.ceil(size.test / device.count), eval_batch, False, trainer.limit_test_batches) * eval_batch
    every = max(1, int(trainer.check_val_every_n_epoch))
    return Work(steps * batch, (epochs // every) * val + test, epochs, steps)


def seconds(work: Work, speed: Speed) -> float:
    return work.train_images * speed.train_s + work.eval_images * speed.infer_s


def sweep_wall(job_seconds: Sequence[float], slots: int) -> float:
    """The sweep's wall time when ``slots`` jobs run at once, each started as soon as a slot is free (the pool
    launcher's order)."""
    free = [0.0] * max(1, slots)
    for s in job_seconds:
        i = free.index(min(free))
        free[i] += s
    return max(free) if job_seconds else 0.0


SpeedFn = Callable[[DictConfig, Device], Speed]
