"""Typed schemas for the Hydra configs: a misspelled key or a wrong type fails at start-up.

Each dataclass mirrors what its config group builds; ``ModelConfig`` mirrors :class:`cvt_lab.models.CvT`'s
constructor one-to-one (a test keeps them in step), plus ``name`` and ``compile``, which the factory uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING


@dataclass
class ModelConfig:
    _target_: str = "cvt_lab.models.build_cvt"
    name: str = MISSING
    compile: bool = False  # torch.compile the model (training and evaluation)
    num_classes: int = 1000
    in_chans: int = 3
    img_size: int = 224
    depths: list[int] = MISSING
    dims: list[int] = MISSING
    heads: list[int] = MISSING
    embed_type: list[str] = MISSING
    embed_kernel: list[int] = MISSING
    embed_stride: list[int] = MISSING
    embed_padding: list[int] = MISSING
    proj: list[str] = MISSING
    proj_kernel: list[int] = MISSING
    q_stride: list[int] = MISSING
    kv_stride: list[int] = MISSING
    pos_embed: list[bool] = MISSING
    cls_token: list[bool] = MISSING
    mlp_ratio: list[float] = MISSING
    qkv_bias: list[bool] = MISSING
    drop_path: list[float] = MISSING
    act: str = "quick_gelu"
    attn_scale: str = "dim"
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    norm_eps: float = 1e-5
