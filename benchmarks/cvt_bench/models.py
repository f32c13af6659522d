"""Model pairing: cvt_lab's CvT and transformers' ``CvtForImageClassification`` built for the same
architecture, eager and (optionally) compiled, and their counted multiply-adds."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

COMPILED = "_compiled"  # suffix of a compiled twin's name: ours_compiled, theirs_compiled


def preset_args(name: str, **overrides: Any) -> dict[str, Any]:
    """Our constructor arguments of the preset ``name`` (conf/model/), with ``overrides``."""
    from cvt_lab.models.factory import FACTORY_KEYS, load_preset

    args = {k: v for k, v in load_preset(name).items() if k not in FACTORY_KEYS}
    args.update(overrides)
    return args


def model_args(model: str) -> dict[str, Any]:
    """The benchmarked architecture. ``cvt_tiny`` gets 1/2/3 blocks: transformers takes each stage's drop-path
    rate as rates[stage] of that stage's blocks, so stage i needs more than i blocks."""
    if model == "cvt_tiny":
        return preset_args("cvt_tiny", depths=[1, 2, 3], num_classes=10)
    return preset_args(model, num_classes=1000)


def hf_config(args: dict[str, Any], num_classes: int):
    """transformers' ``CvtConfig`` for the same architecture as our constructor ``args`` (for CvT-13 this
    equals ``CvtConfig()``'s defaults except the class count). transformers has no other activation than erf
    GELU, no position embedding and no per-stage projection other than its own names."""
    from transformers import CvtConfig

    n = len(args["depths"])
    return CvtConfig(
        num_labels=num_classes, num_channels=args["in_chans"], patch_sizes=list(args["embed_kernel"]),
        patch_stride=list(args["embed_stride"]), patch_padding=list(args["embed_padding"]),
        embed_dim=list(args["dims"]), num_heads=list(args["heads"]), depth=list(args["depths"]),
        mlp_ratio=list(args["mlp_ratio"]), attention_drop_rate=[args["attn_drop_rate"]] * n,
        drop_rate=[args["drop_rate"]] * n, drop_path_rate=list(args["drop_path"]), qkv_bias=list(args["qkv_bias"]),
        cls_token=list(args["cls_token"]), qkv_projection_method=list(args["proj"]),
        kernel_qkv=list(args["proj_kernel"]), padding_kv=[k // 2 for k in args["proj_kernel"]],
        stride_kv=list(args["kv_stride"]), padding_q=[k // 2 for k in args["proj_kernel"]],
        stride_q=list(args["q_stride"]),
    )


class Pair:
    """Our model and transformers' on one device, from the same seed; with ``compiled``, also a compiled twin
    of each (same weights, ``nn.Module.compile`` in place, static shapes: every size and precision gets its
    own graph)."""

    def __init__(self, args: dict[str, Any], device: str, seed: int = 0, compiled: bool = False,
                 compile_mode: str | None = None):
        try:
            from transformers import CvtForImageClassification
        except ImportError:
            raise SystemExit("bench: transformers is needed for the comparison: pip install -e '.[test]'") from None
        from cvt_lab.models.cvt import CvT

        torch.manual_seed(seed)
        self.args = args
        self.models: dict[str, nn.Module] = {
            "ours": CvT(**args).to(device),
            "theirs": CvtForImageClassification(hf_config(args, args["num_classes"])).to(device),
        }
        if compiled:
            for name in ("ours", "theirs"):
                twin = copy.deepcopy(self.models[name])
                twin.compile(dynamic=False, mode=compile_mode)
                self.models[name + COMPILED] = twin

    def eager(self, name: str) -> nn.Module:
        """The eager model behind ``name`` (itself, or the twin a compiled one was copied from)."""
        return self.models[name.removesuffix(COMPILED)]

    def params(self) -> dict[str, int]:
        return {k: sum(p.numel() for p in self.eager(k).parameters()) for k in self.models}


def macs(model: nn.Module, image_size: int) -> int:
    """Counted multiply-adds of one image's forward pass (:func:`cvt_lab.complexity.count`, attention
    matmuls included); works for transformers' model too (it takes the images positionally)."""
    from cvt_lab.complexity import count

    return count(model, image_size, in_chans=3).macs


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics (in place), so numerics
    checks exercise them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
    return model
