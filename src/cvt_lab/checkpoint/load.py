"""Load CvT weights of any layout into a model, refusing a checkpoint of another architecture with one message."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cvt_lab.checkpoint.formats import HEAD_KEYS, _listing, load_state, to_cvt_lab

log = logging.getLogger(__name__)


def _architecture(state: Mapping[str, torch.Tensor]) -> str:
    """A one-line summary (blocks and width per stage, classes) of a state dict in our layout."""
    depths: dict[int, int] = {}
    dims: dict[int, int] = {}
    for k, v in state.items():
        m = re.match(r"stages\.(\d+)\.(?:blocks\.(\d+)\.|patch_embed\.proj\.weight$)", k)
        if m and m[2] is not None:
            depths[int(m[1])] = max(depths.get(int(m[1]), 0), int(m[2]) + 1)
        elif m:
            dims[int(m[1])] = v.shape[0]
    stages = sorted(set(depths) | set(dims))
    head = state.get("head.weight")
    return (f"depths={[depths.get(i, 0) for i in stages]}, dims={[dims.get(i) for i in stages]}, "
            f"classes={head.shape[0] if head is not None else None}")


@dataclass
class LoadResult:
    """What :func:`load_checkpoint` did: keys the checkpoint lacked / had extra / had in another shape
    (all empty after a strict load, apart from the head), and whether the head was kept fresh."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    head_replaced: bool = False


def _compare(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> LoadResult:
    # num_batches_tracked does not affect outputs; some exporters drop it.
    missing = [k for k in model_state if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in model_state]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in model_state.items() if k in state and state[k].shape != v.shape]
    return LoadResult(missing, unexpected, mismatched)


def _only_head(result: LoadResult) -> bool:
    differing = result.missing + result.unexpected + [m.split(":")[0] for m in result.mismatched]
    return bool(differing) and all(k in HEAD_KEYS for k in differing)


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> LoadResult:
    """Load a checkpoint (any layout, see :func:`load_state`) into a :class:`~cvt_lab.models.CvT`.

    A checkpoint for another architecture raises one ``ValueError`` listing the missing, unexpected and
    mismatched keys (``strict=False`` loads what fits instead and returns them). When only the
    classifier differs (another number of classes, or a head on one side only), the rest loads and the
    model keeps its freshly initialised head: the usual start of fine-tuning, reported in one log line.
    """
    state = to_cvt_lab(load_state(path))
    model_state = model.state_dict()
    result = _compare(model_state, state)
    if _only_head(result):
        old = state["head.weight"].shape[0] if "head.weight" in state else 0
        new = model_state["head.weight"].shape[0] if "head.weight" in model_state else 0
        msg = f"cvt_lab: checkpoint {path}: head replaced for fine-tuning ({old} -> {new} classes)"
        log.warning(msg)  # without logging configured, Python prints warnings to stderr
        state = {k: v for k, v in state.items() if k not in HEAD_KEYS}
        result = LoadResult(head_replaced=True)
    elif strict and (result.missing or result.unexpected or result.mismatched):
        parts = [f"cvt_lab: checkpoint {path} does not fit this model "
                 f"(checkpoint {_architecture(state)}; model {_architecture(model_state)})."]
        for label, items in (("missing from the checkpoint", result.missing),
                             ("unexpected in the checkpoint", result.unexpected),
                             ("shape mismatch", result.mismatched)):
            if items:
                parts.append(f"{len(items)} {label}: {_listing(items)}.")
        if any(k.endswith("pos_embed") for k in result.missing):
            parts.append("The released CvT weights have no position embedding: build the model with "
                         "pos_embed=False to load them.")
        raise ValueError(" ".join(parts))
    bad = {m.split(":")[0] for m in result.mismatched}
    fitting = {k: v for k, v in state.items() if k in model_state and k not in bad}
    model.load_state_dict(fitting, strict=False)
    return result
