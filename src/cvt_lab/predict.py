"""``mode=predict``: the top-k classes of every image file under ``data.root``, into a CSV in the run directory.

    python -m cvt_lab mode=predict data=imagefolder data.root=DIR checkpoint=RUN_DIR_OR_FILE model=... [predict.top_k=5]

The model is built from the config (``model=``, ``data.num_classes``) and loads ``checkpoint=`` in any format
:func:`cvt_lab.checkpoint.load_checkpoint` reads, or a run directory (its ``checkpoints/last.ckpt``). Images
go through the evaluation transform of file datasets (timm's: resize to image size / crop_pct, centre crop,
ImageNet mean and std), so predictions match what ``mode=eval`` measures on an image folder. Lightning's
``trainer.predict`` runs the batches; a prediction writer appends each batch's rows as it is done.

CSV columns: ``path`` (relative to ``data.root``), then ``class_1, prob_1, ..., class_k, prob_k`` (class indices
as the model was trained: for an image folder, the sorted class directory names' order).
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig
from PIL import Image
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from cvt_lab.results import RunRecord

log = logging.getLogger(__name__)


class ImageFiles(Dataset):
    """Every image file under ``root`` (recursively, sorted), as the model's input tensor."""

    def __init__(self, root: Path, transform: Any):
        self.root, self.transform = root, transform
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


class TopKWriter(BasePredictionWriter):
    """Writes each predicted batch's top-k classes and probabilities as CSV rows."""

    def __init__(self, path: Path, dataset: ImageFiles, top_k: int):
        super().__init__(write_interval="batch")
        self.path, self.dataset, self.top_k = path, dataset, top_k
        self.rows = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        header = ["path"] + [f"{name}_{i}" for i in range(1, self.top_k + 1) for name in ("class", "prob")]
        with self.path.open("w", newline="") as f:
            csv.writer(f).writerow(header)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        probs, classes = prediction.float().softmax(dim=-1).topk(min(self.top_k, prediction.shape[-1]), dim=-1)
        with self.path.open("a", newline="") as f:
            out = csv.writer(f)
            for index, p, c in zip(batch_indices, probs.tolist(), classes.tolist()):
                cells = [x for pair in zip(c, (f"{q:.6f}" for q in p)) for x in pair]
                out.writerow([self.dataset.paths[index].relative_to(self.dataset.root).as_posix(), *cells])
        self.rows += len(batch_indices)


def checkpoint_file(checkpoint: str) -> Path:
    """``checkpoint=`` as a file: a run directory stands for its last checkpoint."""
    from cvt_lab.checkpoint.export import RUN_CHECKPOINT

    path = Path(checkpoint).expanduser()
    return path / RUN_CHECKPOINT if (path / RUN_CHECKPOINT).is_file() else path


def predict(cfg: DictConfig, run_dir: Path, record: RunRecord, started: float) -> None:
    """Predict every image under ``data.root`` with the checkpoint; fills ``record`` in."""
    from cvt_lab.checkpoint import load_checkpoint
    from cvt_lab.module import ImageClassifier
    from cvt_lab.train import JobError, build, trainer_node

    root = Path(cfg.data.root or "")
    if not root.is_dir():
        raise JobError(f"mode=predict reads the images under data.root, and data.root={cfg.data.root!r} is not a "
                       "directory: give data.root=DIR")
    if cfg.predict.top_k < 1:
        raise JobError(f"predict.top_k={cfg.predict.top_k}: give at least 1")
    image_size = cfg.recipe.image_size or cfg.model.img_size
    a = cfg.recipe.augment
    dataset = ImageFiles(root, create_transform(image_size, is_training=False, interpolation=a.interpolation,
                                                crop_pct=a.crop_pct))
    if not len(dataset):
        raise JobError(f"no image files under data.root={root} ({', '.join(IMG_EXTENSIONS)}): give the directory "
                       "that holds the images to predict")
    model = build(cfg.model, "model")
    loaded = load_checkpoint(model, checkpoint_file(cfg.checkpoint))
    if loaded.head_replaced:
        raise JobError(f"checkpoint={cfg.checkpoint} was trained for another number of classes than "
                       f"data.num_classes={cfg.data.num_classes}: give the number it was trained for")
    module = ImageClassifier(model, cfg.recipe, num_classes=cfg.data.num_classes)
    writer = TopKWriter(run_dir / cfg.predict.file, dataset, cfg.predict.top_k)
    trainer: pl.Trainer = build(trainer_node(cfg), "trainer", default_root_dir=str(run_dir), logger=False,
                                callbacks=[writer], enable_checkpointing=False)
    loader = DataLoader(dataset, batch_size=cfg.data.eval_batch_size or cfg.recipe.batch_size,
                        num_workers=cfg.data.num_workers)
    trainer.predict(module, loader, return_predictions=False)
    log.info("top-%d classes of %d images: %s", cfg.predict.top_k, writer.rows, writer.path)
    record.status = "finished"
    record.image_size = image_size
    record.wall_s = round(time.time() - started, 2)
    record.threads = torch.get_num_threads()
