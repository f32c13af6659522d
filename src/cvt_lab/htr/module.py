"""The LightningModule of line recognition: CTC training, greedy decoding, CER / WER per epoch, sample lines.

It shares the classifier's optimizer, schedule and step counting (:class:`cvt_lab.module.ImageClassifier`), so a
recipe means the same for both tasks."""

from __future__ import annotations

import logging
import pickle
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torchmetrics.functional.text import edit_distance
from torchmetrics.text import CharErrorRate, WordErrorRate

from cvt_lab.config import RecipeConfig
from cvt_lab.htr.batching import LineBatch
from cvt_lab.htr.charset import Charset
from cvt_lab.module import ImageClassifier, NonFiniteLossError
from cvt_lab.outcomes import CHARS, EDITS, outcome_key

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.png"


class LineRecognizer(ImageClassifier):
    """``charset`` (the training split's characters) is saved with the hyperparameters, so a checkpoint decodes
    with the alphabet it was trained on; ``model_config`` rebuilds the model as for the classifier."""

    def __init__(self, model: nn.Module | None, recipe: RecipeConfig | dict, charset: list[str],
                 model_config: dict | None = None, num_samples: int = 8):
        pl.LightningModule.__init__(self)  # not the classifier's: no Mixup, no accuracy metrics
        recipe = recipe if isinstance(recipe, RecipeConfig) else OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(RecipeConfig), recipe))
        self.save_hyperparameters({"model": None, "recipe": asdict(recipe), "charset": list(charset),
                                   "model_config": model_config, "num_samples": num_samples})
        self.charset = Charset(charset)
        if model is None:
            if model_config is None:
                raise ValueError("LineRecognizer needs a model, or the model_config to build it from")
            model = instantiate(model_config, num_classes=self.charset.num_classes)
        self.model, self.recipe, self.mixup = model, recipe, None
        self.ctc = nn.CTCLoss(blank=Charset.BLANK, zero_infinity=True)
        self.metrics = nn.ModuleDict({f"{split}_{name}": metric() for split in ("val", "test")
                                      for name, metric in (("cer", CharErrorRate), ("wer", WordErrorRate))})
        self.num_samples = num_samples
        self.samples: list[tuple[torch.Tensor, str, str]] = []
        # Per line of the last validation and test pass: exact match, character edits and transcription length (the
        # report's test-set noise: a row's CER is paired line by line across rows), gathered as the classifier's.
        self.outcomes: dict[str, torch.Tensor] = {}
        self._outcome_batches: dict[str, list[torch.Tensor]] = {}

    @property
    def line_height(self) -> int:
        """The height (px) of the lines it was trained on: the recipe's image size, else the model's ``img_size``
        (as :func:`cvt_lab.building.image_size_of` for a config)."""
        config = self.hparams.get("model_config") or {}
        height = self.recipe.image_size or config.get("img_size")
        if not height:
            raise ValueError("this line recognizer was built without a model config: its line height is unknown")
        return int(height)

    def forward(self, images: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(images, widths)

    def _loss(self, batch: LineBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(batch.images, batch.widths)
        frames = self.model.frame_widths(batch.widths)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, C), CTCLoss's layout
        loss = self.ctc(log_probs, batch.targets, frames, batch.target_lengths)
        return loss, logits, frames

    def training_step(self, batch: LineBatch, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"training loss is {loss.item()} at epoch {self.current_epoch}, "
                                     f"step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _eval_step(self, batch: LineBatch, split: str) -> None:
        loss, logits, frames = self._loss(batch)
        predictions = self.charset.greedy(logits, frames)
        n = len(batch)
        self.log(f"{split}/loss", loss, sync_dist=True, batch_size=n)
        for name in ("cer", "wer"):
            metric = self.metrics[f"{split}_{name}"]
            metric(predictions, batch.texts)
            self.log(f"{split}/{name}", metric, prog_bar=name == "cer", batch_size=n)
        # torchmetrics' Levenshtein distance per line, the one CharErrorRate sums: sum(edits) / sum(chars) is the CER
        per_line = {None: torch.tensor([p == t for p, t in zip(predictions, batch.texts)]),
                    EDITS: edit_distance(predictions, batch.texts, reduction="none").to(torch.int64).reshape(-1),
                    CHARS: torch.tensor([len(t) for t in batch.texts], dtype=torch.int64)}
        for part, values in per_line.items():
            self._outcome_batches.setdefault(outcome_key(split, part), []).append(values)
        if split == "test" and len(self.samples) < self.num_samples:
            for i in range(min(n, self.num_samples - len(self.samples))):
                w = int(batch.widths[i])
                self.samples.append((batch.images[i, :, :, :w].detach().cpu(), batch.texts[i], predictions[i]))

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.samples = []

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.samples and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            from cvt_lab.htr.samples import log_samples, save_samples

            path = save_samples(self.samples, Path(self.trainer.default_root_dir) / SAMPLES_FILE)
            log_samples(self.logger, path)


def load_line_recognizer(path: str | Path) -> LineRecognizer | None:
    """The line recognizer of a Lightning checkpoint that ``mode=train`` wrote (``.ckpt``): its model rebuilt from
    the model config saved with it, its weights, and the charset it was trained with; in eval mode. None for any
    other checkpoint (a classifier's, released or transformers weights, a directory, a Hub repository)."""
    path = Path(path)
    if path.suffix != ".ckpt" or not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects beyond plain containers: a classifier's (its hparams hold configs)
        return None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"cannot read checkpoint {path} ({str(e).splitlines()[0]}); give a complete checkpoint "
                         "(e.g. another epochNNN.ckpt beside it)") from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or not hparams.get("charset") or not hparams.get("model_config"):
        return None
    # compiling is a choice of the run that trained it, not part of the model: evaluation and export run it eagerly
    config = {**hparams["model_config"], "compile": False, "compile_mode": None}
    module = LineRecognizer(None, hparams["recipe"], hparams["charset"], config, hparams.get("num_samples", 8))
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()
