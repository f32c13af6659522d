"""``mode=predict`` with a line recognizer's checkpoint: the transcription of every line image under
``predict.input`` (else ``data.root``), into a CSV in the run directory.

    python -m cvt_lab mode=predict checkpoint=RUN_DIR_OR_CKPT predict.input=DIR

The checkpoint says everything the prediction needs: the model (rebuilt from the config saved with it), its charset
and the line height it was trained at; the config's ``model`` is not used. Each image is read as training reads
lines (grey or RGB as the model, inverted when dark on light, or as ``data.invert`` says; resized to the height,
aspect kept), padded on the right to the widest of its batch and decoded greedily. An image that cannot be read is
skipped with one line, and the others are predicted.

CSV columns: ``path`` (relative to the input folder), ``text``.
"""

from __future__ import annotations

import csv
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchvision.datasets.folder import IMG_EXTENSIONS

from cvt_lab.building import trainer_from_config
from cvt_lab.errors import JobError
from cvt_lab.htr.batching import pad_lines
from cvt_lab.htr.folder import line_tensor
from cvt_lab.htr.module import LineRecognizer
from cvt_lab.predict import ImageFiles, input_folder

log = logging.getLogger(__name__)


class LineImages:
    """Collates ``(index, line or None)`` items: the readable lines' indices, their padded batch and widths."""

    def __init__(self, min_width: int):
        self.min_width = min_width

    def __call__(self, items: list[tuple[int, torch.Tensor | None]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kept = [(i, x) for i, x in items if x is not None]
        if not kept:  # no line of this batch could be read
            return torch.empty(0, dtype=torch.long), torch.empty(0), torch.empty(0, dtype=torch.long)
        images, widths = pad_lines([x for _, x in kept], self.min_width)
        return torch.tensor([i for i, _ in kept]), images, widths


class LinePredictor(pl.LightningModule):
    """Runs the line recognizer on a batch of ``(indices, images, widths)``: the indices and greedy transcriptions."""

    def __init__(self, recognizer: LineRecognizer):
        super().__init__()
        self.recognizer = recognizer

    def predict_step(self, batch, batch_idx: int) -> tuple[torch.Tensor, list[str]]:
        indices, images, widths = batch
        if not len(indices):
            return indices, []
        logits = self.recognizer(images, widths)
        return indices, self.recognizer.charset.greedy(logits, self.recognizer.model.frame_widths(widths))


class TextWriter(BasePredictionWriter):
    """Writes each predicted batch's transcriptions as CSV rows ``path, text``."""

    def __init__(self, path: Path, dataset: ImageFiles):
        super().__init__(write_interval="batch")
        self.path, self.dataset, self.rows = path, dataset, 0

    def on_predict_start(self, trainer, pl_module) -> None:
        with self.path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(["path", "text"])

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        indices, texts = prediction
        with self.path.open("a", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            for index, text in zip(indices.tolist(), texts):
                out.writerow([self.dataset.paths[index].relative_to(self.dataset.root).as_posix(), text])
        self.rows += len(texts)


def predict_lines(cfg: DictConfig, run_dir: Path, started: float, recognizer: LineRecognizer) -> dict[str, Any]:
    """Transcribe every image under the input folder with ``recognizer`` into ``predict.file``; returns the record's
    fields it measured."""
    root = input_folder(cfg)
    height, model = recognizer.line_height, recognizer.model
    invert = str(cfg.data.get("invert", "auto")).lower()
    dataset = ImageFiles(root, partial(line_tensor, in_chans=model.in_chans, height=height, invert=invert))
    if not len(dataset):
        raise JobError(f"no image files under {root} ({', '.join(IMG_EXTENSIONS)}): give the directory that holds "
                       "the line images to transcribe (predict.input=DIR)")
    writer = TextWriter(run_dir / cfg.predict.file, dataset)
    trainer: pl.Trainer = trainer_from_config(cfg, run_dir, logger=False, callbacks=[writer],
                                              enable_checkpointing=False)
    loader = DataLoader(dataset, batch_size=cfg.data.eval_batch_size or cfg.recipe.batch_size,
                        num_workers=cfg.data.num_workers, collate_fn=LineImages(model.min_width()))
    trainer.predict(LinePredictor(recognizer), loader, return_predictions=False)
    log.info("transcriptions of %d line images: %s", writer.rows, writer.path)
    name = (recognizer.hparams.get("model_config") or {}).get("name")
    return {"model": name or cfg.model.name, "image_size": height, "wall_s": round(time.time() - started, 2),
            "threads": torch.get_num_threads()}
