"""What a line-recognition job builds (called by :func:`cvt_lab.train.train` for a ``cvt_lab.htr`` model): the data
first (its training split's charset sizes the head), then the model, initial weights, and the LightningModule."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cvt_lab.htr.datamodule import LineDataModule
from cvt_lab.htr.module import LineRecognizer, load_line_recognizer

log = logging.getLogger(__name__)


def is_line_task(cfg: DictConfig) -> bool:
    """A line recognizer is a model whose ``_target_`` lives in :mod:`cvt_lab.htr`."""
    return str(cfg.model.get("_target_", "")).startswith("cvt_lab.htr.")


def _adapt_input(state: dict[str, torch.Tensor], key: str, in_chans: int) -> None:
    """RGB weights for a grey-scale model: timm's ``adapt_input_conv`` (the channels summed)."""
    from timm.models import adapt_input_conv

    if key in state and state[key].shape[1] != in_chans:
        state[key] = adapt_input_conv(in_chans, state[key])


def load_line_checkpoint(model: nn.Module, path: str, charset_size: int) -> bool:
    """Initial weights for a line recognizer: another line recognizer's (ours), or a CvT classifier's (ours, released,
    transformers, Hub) into the backbone with a fresh CTC head. Returns whether the head was replaced."""
    from cvt_lab.checkpoint.formats import load_state, to_cvt_lab

    state = load_state(path)
    if any(k.startswith("backbone.") for k in state):
        target, prefix = model, ""
    else:
        if not hasattr(model, "backbone"):
            raise ValueError(f"checkpoint={path} holds CvT weights; only the CvT line recognizer (model=htr_cvt) has "
                             "a CvT backbone to load them into")
        target, prefix, state = model.backbone, "backbone.", to_cvt_lab(state)
        state = {k: v for k, v in state.items() if k not in ("head.weight", "head.bias")}
    _adapt_input(state, "stages.0.patch_embed.proj.weight" if prefix else "backbone.stages.0.patch_embed.proj.weight",
                 model.in_chans)
    own = target.state_dict()
    replaced = prefix != ""
    if not prefix and state.get("head.weight") is not None and state["head.weight"].shape[0] != charset_size:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        replaced = True
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")
               and not (not prefix and replaced and k.startswith("head."))]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    if missing or mismatched or unexpected:
        raise ValueError(f"checkpoint={path} does not fit model (missing {missing[:5]}, shape mismatch "
                         f"{mismatched[:5]}, unexpected {unexpected[:5]}); build the backbone as the checkpoint's "
                         "(e.g. model.pos_embed=[false,false,false] for the released CvT weights)")
    target.load_state_dict(state, strict=False)
    if replaced:
        log.warning("checkpoint %s: a fresh CTC head for %d classes", path, charset_size)
    return replaced


def checked_line_recognizer(cfg: DictConfig, trained: LineRecognizer | None) -> LineRecognizer:
    """The line recognizer of ``checkpoint=`` (:func:`load_line_recognizer`) for ``mode=eval`` / ``mode=predict``:
    its own model, and the charset it was trained with (never one rebuilt from the data); one message when the
    checkpoint holds none."""
    if trained is None:
        raise ValueError(f"mode={cfg.mode} checkpoint={cfg.checkpoint}: not a line recognizer's checkpoint (none "
                         "carries the charset its head decodes to); give a checkpoint that mode=train wrote for "
                         "a line recognizer: its run directory, or <run>/checkpoints/last.ckpt")
    name = (trained.hparams.get("model_config") or {}).get("name")
    if is_line_task(cfg) and name != cfg.model.name:
        log.warning("checkpoint=%s holds model=%s: that model is used (not model=%s)", cfg.checkpoint, name,
                    cfg.model.name)
    return trained


def build_line_task(cfg: DictConfig, build: Callable[..., Any], data_kwargs: dict[str, Any],
                    checkpoint: str | Path | None = None) -> tuple[nn.Module, LineDataModule, LineRecognizer]:
    """The model, data and LightningModule of a line-recognition job; ``checkpoint``: ``checkpoint=`` as a file (a
    run directory resolved to its last checkpoint). ``mode=eval`` evaluates the checkpoint's own model, charset and
    line height; ``mode=train`` starts from its weights (:func:`load_line_checkpoint`)."""
    trained = checked_line_recognizer(cfg, load_line_recognizer(checkpoint or "")) if cfg.mode == "eval" else None
    if trained is not None:
        data_kwargs = {**data_kwargs, "image_size": trained.line_height}
    datamodule = build(cfg.data, "data", **data_kwargs)
    if not isinstance(datamodule, LineDataModule):
        raise ValueError(f"model={cfg.model.name} recognizes text lines: use a line data set (data=digit_lines or "
                         f"data=lines), not data={cfg.data.name}")
    if trained is not None:
        datamodule.use_charset(trained.charset, f"checkpoint={cfg.checkpoint}",
                               "the checkpoint cannot transcribe it: evaluate on lines written with its characters, "
                               f"or fine-tune it on this data first (mode=train checkpoint={cfg.checkpoint})")
    datamodule.setup()  # every line checked (transcriptions, images, charset) before anything is written
    if trained is not None:
        datamodule.min_width = max(datamodule.min_width, trained.model.min_width())
        return trained.model, datamodule, trained
    charset = datamodule.charset
    model = build(cfg.model, "model", num_classes=charset.num_classes)
    if checkpoint:
        load_line_checkpoint(model, str(checkpoint), charset.num_classes)
    datamodule.min_width = max(datamodule.min_width, model.min_width())
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model_config["num_classes"] = charset.num_classes
    module = LineRecognizer(model, OmegaConf.to_object(cfg.recipe), charset.chars, model_config=model_config)
    return model, datamodule, module
