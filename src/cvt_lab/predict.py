"""``mode=predict``: the top-k classes of every image file under ``predict.input`` (else ``data.root``), into a CSV
in the run directory (with a line recognizer's checkpoint, each line image's text: :mod:`cvt_lab.htr.predict`).

    python -m cvt_lab mode=predict checkpoint=RUN_DIR_OR_FILE predict.input=DIR model=... [predict.top_k=5]

The model is built from the config (``model=``, ``data.num_classes``) and loads ``checkpoint=`` in any format
:func:`cvt_lab.checkpoint.load_checkpoint` reads, or a run directory (its ``checkpoints/last.ckpt``). Images
go through the evaluation transform of file datasets (timm's: resize to image size / crop_pct, centre crop,
ImageNet mean and std), so predictions match what ``mode=eval`` measures on an image folder. Lightning's
``trainer.predict`` runs the batches; a prediction writer appends each batch's rows as it is done. An image that
cannot be read is skipped with one line (as training does), and the others are predicted.

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

from cvt_lab.building import image_size_of, model_from_config, module_from_config, trainer_from_config
from cvt_lab.errors import JobError
from cvt_lab.rundir import checkpoint_file  # noqa: F401  importable here, as before

log = logging.getLogger(__name__)


class ImageFiles(Dataset):
    """Every image file under ``root`` (recursively, sorted), as ``(index, the model's input tensor)``; an image that
    cannot be read gives ``(index, None)`` and one warning (:func:`skip_unreadable` drops it from its batch)."""

    def __init__(self, root: Path, transform: Any):
        self.root, self.transform = root, transform
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
        self.unreadable: list[Path] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None]:
        try:
            with Image.open(self.paths[index]) as image:
                return index, self.transform(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as e:  # PIL: truncated, unidentified or malformed files
            log.warning("unreadable image %s (%s): skipped; replace or delete the file", self.paths[index], e)
            self.unreadable.append(self.paths[index])
            return index, None


def skip_unreadable(items: list[tuple[int, torch.Tensor | None]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the readable images: ``(their indices, their tensors)``; empty when none could be read."""
    kept = [(i, x) for i, x in items if x is not None]
    if not kept:
        return torch.empty(0, dtype=torch.long), torch.empty(0)
    return torch.tensor([i for i, _ in kept]), torch.stack([x for _, x in kept])


class FilePredictor(pl.LightningModule):
    """Runs the classifier on a batch of ``(indices, images)``: its logits and the images' indices."""

    def __init__(self, classifier: pl.LightningModule):
        super().__init__()
        self.classifier = classifier

    def predict_step(self, batch, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        indices, images = batch
        return indices, self.classifier(images) if len(indices) else None


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
        indices, logits = prediction
        if logits is None:  # no image of this batch could be read
            return
        probs, classes = logits.float().softmax(dim=-1).topk(min(self.top_k, logits.shape[-1]), dim=-1)
        with self.path.open("a", newline="") as f:
            out = csv.writer(f)
            for index, p, c in zip(indices.tolist(), probs.tolist(), classes.tolist()):
                cells = [x for pair in zip(c, (f"{q:.6f}" for q in p)) for x in pair]
                out.writerow([self.dataset.paths[index].relative_to(self.dataset.root).as_posix(), *cells])
        self.rows += len(indices)


def input_folder(cfg: DictConfig) -> Path:
    """The folder ``mode=predict`` reads its images from: ``predict.input``, else ``data.root``."""
    key = "predict.input" if cfg.predict.get("input") else "data.root"
    given = cfg.predict.input if key == "predict.input" else cfg.data.get("root")
    root = Path(str(given or "")).expanduser()
    if not given or not root.is_dir():
        raise JobError(f"mode=predict reads the images under predict.input (else data.root), and {key}={given!r} is "
                       "not a directory: give predict.input=DIR")
    return root


def predict(cfg: DictConfig, run_dir: Path, started: float) -> dict[str, Any]:
    """Predict every image under ``predict.input`` (else ``data.root``) with the checkpoint into ``predict.file``;
    returns the record's fields it measured."""
    root = input_folder(cfg)
    if cfg.predict.top_k < 1:
        raise JobError(f"predict.top_k={cfg.predict.top_k}: give at least 1")
    image_size = image_size_of(cfg)
    a = cfg.recipe.augment
    dataset = ImageFiles(root, create_transform(image_size, is_training=False, interpolation=a.interpolation,
                                                crop_pct=a.crop_pct))
    if not len(dataset):
        raise JobError(f"no image files under {root} ({', '.join(IMG_EXTENSIONS)}): give the directory that holds "
                       "the images to predict (predict.input=DIR)")
    module = FilePredictor(module_from_config(cfg, model_from_config(cfg)))
    writer = TopKWriter(run_dir / cfg.predict.file, dataset, cfg.predict.top_k)
    trainer: pl.Trainer = trainer_from_config(cfg, run_dir, logger=False, callbacks=[writer],
                                              enable_checkpointing=False)
    loader = DataLoader(dataset, batch_size=cfg.data.eval_batch_size or cfg.recipe.batch_size,
                        num_workers=cfg.data.num_workers, collate_fn=skip_unreadable)
    trainer.predict(module, loader, return_predictions=False)
    log.info("top-%d classes of %d images: %s", cfg.predict.top_k, writer.rows, writer.path)
    return {"image_size": image_size, "wall_s": round(time.time() - started, 2), "threads": torch.get_num_threads()}
