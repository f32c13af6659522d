"""The LightningModule: a classifier around any backbone, trained with a recipe (cvt_lab.config.RecipeConfig)."""

from __future__ import annotations

import math
from dataclasses import asdict

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from cvt_lab.config import RecipeConfig
from cvt_lab.outcomes import outcome_split


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the run stops and keeps its last good checkpoint."""


class ImageClassifier(pl.LightningModule):
    """``model_config`` (the ``model`` config node as a dict, with its ``_target_``) is saved with the
    hyperparameters, so ``ImageClassifier.load_from_checkpoint(path)`` rebuilds the model from it."""

    def __init__(self, model: nn.Module | None, recipe: RecipeConfig | dict, num_classes: int,
                 model_config: dict | None = None):
        super().__init__()
        recipe = recipe if isinstance(recipe, RecipeConfig) else OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(RecipeConfig), recipe))
        # Plain containers only (a checkpoint loads with torch.load(weights_only=True)); model=None:
        # load_from_checkpoint rebuilds it from model_config.
        self.save_hyperparameters({"model": None, "recipe": asdict(recipe), "num_classes": num_classes,
                                   "model_config": model_config})
        if model is None:
            if model_config is None:
                raise ValueError("ImageClassifier needs a model, or the model_config to build it from")
            model = instantiate(model_config)
        self.model = model
        self.recipe = recipe
        r = recipe
        self.mixup = None
        if r.mixup > 0 or r.cutmix > 0:
            self.mixup = Mixup(mixup_alpha=r.mixup, cutmix_alpha=r.cutmix, prob=r.mixup_prob,
                               switch_prob=r.mixup_switch_prob, label_smoothing=r.label_smoothing,
                               num_classes=num_classes)
            self.train_loss = SoftTargetCrossEntropy()  # Mixup already smooths the targets
        elif r.label_smoothing > 0:
            self.train_loss = LabelSmoothingCrossEntropy(r.label_smoothing)
        else:
            self.train_loss = nn.CrossEntropyLoss()
        top_k = min(5, num_classes)
        self.metrics = nn.ModuleDict({
            f"{split}_acc{k}": MulticlassAccuracy(num_classes, top_k=min(k, top_k), average="micro")
            for split in ("val", "test") for k in (1, 5)
        })
        # Per-image top-1 correctness of the last validation and test pass, in loader order (the report's
        # test-set noise: cvt_lab.report.stats). Not state: a checkpoint never carries it.
        self.outcomes: dict[str, torch.Tensor] = {}
        self._outcome_batches: dict[str, list[torch.Tensor]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The batch size is symbolic from a compiled model's first step on, so a last, smaller batch of an
        # epoch or split reuses the graph instead of compiling another (a no-op for an eager model).
        torch._dynamo.maybe_mark_dynamic(x, 0)
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        if self.mixup is not None:
            images, labels = self.mixup(images, labels)
        loss = self.train_loss(self(images), labels)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}"
            )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch, split: str) -> None:
        images, labels = batch
        logits = self(images)
        self.log(f"{split}/loss", nn.functional.cross_entropy(logits, labels), sync_dist=True)
        for k in (1, 5):
            metric = self.metrics[f"{split}_acc{k}"]
            metric(logits, labels)
            self.log(f"{split}/acc{k}", metric, prog_bar=k == 1)
        self._outcome_batches.setdefault(split, []).append((logits.argmax(-1) == labels).cpu())

    def _outcome_keys(self, split: str) -> list[str]:
        """The split's outcome arrays being gathered: ``test``, and a line recognizer's ``test_edits`` beside it."""
        return [k for k in self._outcome_batches if outcome_split(k) == split]

    def _collect_outcomes(self, split: str) -> None:
        for key in self._outcome_keys(split):
            batches = self._outcome_batches.pop(key)
            if batches and not self.trainer.sanity_checking:
                self.outcomes[key] = torch.cat(batches)

    def _drop_outcomes(self, split: str) -> None:
        for key in self._outcome_keys(split):
            del self._outcome_batches[key]

    def on_validation_epoch_start(self) -> None:
        self._drop_outcomes("val")

    def on_validation_epoch_end(self) -> None:
        self._collect_outcomes("val")

    def on_test_epoch_start(self) -> None:
        self._drop_outcomes("test")

    def on_test_epoch_end(self) -> None:
        self._collect_outcomes("test")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def global_batch_size(self, batch_size: int) -> int:
        t = self.trainer
        return batch_size * t.world_size * t.accumulate_grad_batches

    def configure_optimizers(self):
        o, s = self.recipe.optimizer, self.recipe.schedule
        lr = o.lr
        if o.lr_base_batch:
            lr = o.lr * self.global_batch_size(self.recipe.batch_size) / o.lr_base_batch
        kwargs = {"momentum": o.momentum} if o.name.lower() in ("sgd", "momentum", "nesterov") else {}
        # timm exempts 1-d parameters (norms, biases) and model.no_weight_decay() (class token, pos. embedding).
        optimizer = create_optimizer_v2(self.model, opt=o.name, lr=lr, weight_decay=o.weight_decay, **kwargs)
        # The schedule's time unit is the optimizer step, so warm-up and decay are smooth within epochs
        # and the same schedule serves training by epochs and by steps.
        total_steps = max(self.training_steps(), 1)
        steps_per_epoch = total_steps / max(self.trainer.max_epochs, 1) if self.recipe.max_steps <= 0 else None
        warmup_steps = int(s.warmup_epochs * steps_per_epoch) if steps_per_epoch else 0
        scheduler, _ = create_scheduler_v2(optimizer, sched=s.name, num_epochs=total_steps, warmup_epochs=warmup_steps,
                                           warmup_lr=s.warmup_lr, min_lr=s.min_lr, step_on_epochs=True)
        # The name is what the LR monitor (callbacks.lr_monitor) logs the learning rates under: train/lr/pgN.
        schedule = {"scheduler": scheduler, "interval": "step", "name": "train/lr"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def training_steps(self) -> int:
        """The optimizer steps of the whole training, as ``trainer.estimated_stepping_batches`` counts them but from
        a loader of the datamodule's own: Lightning's estimate sets up the trainer's training loader, here before a
        checkpoint is restored, and that loader then never gets the checkpoint's position in the epoch (Lightning
        issue #20550), and with workers it has drawn epoch 0's order already. Without a datamodule: Lightning's."""
        t = self.trainer
        loader = t.datamodule.train_dataloader() if getattr(t, "datamodule", None) is not None else None
        if not hasattr(loader, "__len__"):
            return int(t.estimated_stepping_batches)
        limit = t.limit_train_batches  # Lightning's: an int is a number of batches, a float a fraction
        batches = min(len(loader), limit) if isinstance(limit, int) else int(len(loader) * limit)
        steps = math.ceil(batches / t.accumulate_grad_batches) * max(t.max_epochs, 1)
        return min(steps, t.max_steps) if t.max_steps > 0 else steps

    def lr_scheduler_step(self, scheduler, metric) -> None:
        scheduler.step(epoch=self.global_step)  # timm schedulers take the step count explicitly
