"""What a line-recognition job builds (called by :func:`cvt_lab.train.train` for a ``cvt_lab.htr`` model): the data
first (its training split's charset sizes the head), then the model, initial weights, and the LightningModule."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cvt_lab.htr.datamodule import LineDataModule
from cvt_lab.htr.module import LineRecognizer

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


def build_line_task(cfg: DictConfig, build: Callable[..., Any], data_kwargs: dict[str, Any]
                    ) -> tuple[nn.Module, LineDataModule, LineRecognizer]:
    datamodule = build(cfg.data, "data", **data_kwargs)
    if not isinstance(datamodule, LineDataModule):
        raise ValueError(f"model={cfg.model.name} recognizes text lines: use a line data set (data=digit_lines or "
                         f"data=lines), not data={cfg.data.name}")
    datamodule.setup()  # every line checked (transcriptions, images, charset) before anything is written
    charset = datamodule.charset
    model = build(cfg.model, "model", num_classes=charset.num_classes)
    if cfg.checkpoint:
        replaced = load_line_checkpoint(model, cfg.checkpoint, charset.num_classes)
        if cfg.mode == "eval" and replaced:
            raise ValueError(f"checkpoint={cfg.checkpoint} has no CTC head for this charset "
                             f"({charset.num_classes - 1} characters); fine-tune it with mode=train first")
    datamodule.min_width = max(datamodule.min_width, model.min_width())
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model_config["num_classes"] = charset.num_classes
    module = LineRecognizer(model, OmegaConf.to_object(cfg.recipe), charset.chars, model_config=model_config)
    return model, datamodule, module
