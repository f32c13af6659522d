"""CvT: Convolutional vision Transformer (Wu et al., ICCV 2021), one staged backbone for every variant.

Each stage is: token embedding (a strided convolution -> LayerNorm) -> optional learned position
embedding -> optional class token -> transformer blocks whose q/k/v come from a per-stage projection
(depthwise conv + BatchNorm, average pooling, or none). Every choice is a per-stage constructor
argument, so the paper's ablations are configuration, not code.

Module names follow the released checkpoints (``patch_embed``, ``conv_proj_q``, ``proj_q``, ``mlp.fc1``...)
with ``stages.{i}`` in place of ``stage{i}``, so loading released weights is a prefix rename
(see :mod:`cvt_lab.checkpoint`). Numerics follow the released code: attention scale is the stage
width ** -0.5 (not the head width), the class token bypasses the spatial projection, LayerNorm eps
1e-5, drop path rising linearly from 0 within each stage.

Tokens stay in (B, N, C) layout. Moving between tokens and maps uses ``(B, H, W, C)`` views permuted
to ``(B, C, H, W)``: that is a channels-last tensor over the same memory, so the depthwise
convolutions read the tokens without a copy.

Speed: the levers in ``FAST_PATHS`` (SiLU-form QuickGELU folded into the MLP GEMMs, fused attention,
zero-copy layouts, CPU bf16 paths) change how, not what, is computed. Each is a plain bool attribute of the
modules it steers (as timm's ``fused_attn``), so the forward reads no global state and ``torch.compile``
traces it whole; ``CvT.set_fast_paths`` or ``with fast_paths(model, False):`` switches them (all off is the
plain formulation). Each one's measured effect is in docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, QuickGELU, trunc_normal_
from timm.models import checkpoint
from timm.models._features import feature_take_indices
from torch import nn

from cvt_lab.models.layers import (
    bicubic_weights,
    FAST_PATHS,
    ConvAttention,
    ConvEmbed,
    Mlp,
    column_mask,
    conv_out_size,
    map_to_tokens,
    tokens_to_map,
)
from cvt_lab.models.spec import OPTION_ARG_NAMES, STAGE_ARG_NAMES

# Token embeddings: "conv" is CvT's (overlapping conv + LayerNorm), "patch" the same made non-overlapping
# (kernel = stride, no padding; Table 6's patch rows), "vit" ViT/DeiT's patch embedding (non-overlapping and no
# LayerNorm: a normalized token would dwarf a position embedding initialized at std 0.02, docs/ablations.md).
EMBED_TYPES = ("conv", "patch", "vit")
NON_OVERLAPPING = ("patch", "vit")
PROJ_TYPES = ("dw_bn", "avg", "linear")
ACTIVATIONS = {"gelu": nn.GELU, "quick_gelu": QuickGELU}
ATTN_SCALES = ("dim", "head")


def _lever_settings(enabled: bool | None, levers: Mapping[str, bool]) -> dict[str, bool]:
    """The levers to set: all of them to ``enabled`` (unless None), then the named ones."""
    unknown = sorted(set(levers) - set(FAST_PATHS))
    if unknown:
        raise ValueError(f"CvT: unknown speed lever(s) {unknown}; valid ones are {', '.join(FAST_PATHS)}")
    settings = dict.fromkeys(FAST_PATHS, bool(enabled)) if enabled is not None else {}
    settings.update((k, bool(v)) for k, v in levers.items())
    return settings


def fast_paths(model: nn.Module | None = None, enabled: bool | None = None,
               **levers: bool) -> AbstractContextManager[dict[str, bool]]:
    """Switch ``model``'s speed levers inside a ``with`` block and restore them after it:
    ``fast_paths(model, False)`` is the plain formulation, keywords set single levers, e.g.
    ``fast_paths(model, silu_mlp=False)``. The block gets the settings in force."""
    if not isinstance(model, nn.Module) or not hasattr(model, "set_fast_paths"):
        raise TypeError(f"fast_paths() takes the model whose levers to switch first, got {model!r}: the levers "
                        "are attributes of the model's modules, e.g. `with fast_paths(model, False): ...`")
    return _switched(model, _lever_settings(enabled, levers))


@contextmanager
def _switched(model: nn.Module, settings: dict[str, bool]) -> Iterator[dict[str, bool]]:
    previous = model.set_fast_paths(**settings)
    try:
        yield model.set_fast_paths()
    finally:
        model.set_fast_paths(**previous)


class Block(nn.Module):
    """Pre-norm transformer block with convolutional attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, act: str, drop_path: float, drop: float, eps: float,
                 **attn_kwargs):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = ConvAttention(dim, heads, proj_drop=drop, **attn_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=ACTIVATIONS[act], drop=drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], widths: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw, widths))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """Token embedding, optional position embedding and class token, then ``depth`` blocks."""

    def __init__(self, in_chans: int, depth: int, grid: tuple[int, int], stage: Mapping[str, Any], *, act: str,
                 attn_scale: str, drop: float, attn_drop: float, eps: float):
        """``stage``: this stage's value of every per-stage argument (:data:`cvt_lab.models.spec.STAGE_ARGS`)."""
        dim, embed_type, embed_kernel, embed_stride, embed_padding, pos_embed, cls_token, drop_path = (
            stage[k] for k in ("dims", "embed_type", "embed_kernel", "embed_stride", "embed_padding", "pos_embed",
                               "cls_token", "drop_path"))
        super().__init__()
        if embed_type in NON_OVERLAPPING:  # the kernel is the stride, no padding
            embed_kernel, embed_padding = embed_stride, 0
        self.patch_embed = ConvEmbed(in_chans, dim, embed_kernel, embed_stride, embed_padding, eps,
                                     norm=embed_type != "vit")
        self.grid = grid  # the token grid the position embedding was created for
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim)) if pos_embed else None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.pos_drop = nn.Dropout(drop)
        self.zero_copy_layout = FAST_PATHS["zero_copy_layout"]
        self.grad_checkpointing = False  # recompute each block in backward (timm's set_grad_checkpointing)
        rates = [drop_path * j / max(depth - 1, 1) for j in range(depth)]  # from 0 within each stage (released code)
        self.blocks = nn.ModuleList(
            Block(dim, stage["heads"], stage["mlp_ratio"], act, rate, drop, eps, proj=stage["proj"],
                  kernel=stage["proj_kernel"], kv_stride=stage["kv_stride"], qkv_bias=stage["qkv_bias"],
                  with_cls_token=cls_token, attn_scale=attn_scale, attn_drop=attn_drop)
            for rate in rates
        )

    def resized_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """The position embedding for a ``hw`` token grid, bicubically interpolated if it differs."""
        if hw == self.grid:
            return self.pos_embed
        grid = tokens_to_map(self.pos_embed, self.grid, self.zero_copy_layout)
        grid = F.interpolate(grid.float(), size=hw, mode="bicubic", align_corners=False).to(self.pos_embed.dtype)
        return map_to_tokens(grid, self.zero_copy_layout)

    def token_widths(self, widths: torch.Tensor) -> torch.Tensor:
        """The valid token columns after this stage's token embedding, for input maps of valid widths ``widths``."""
        conv = self.patch_embed.proj
        return conv_out_size(widths, conv.kernel_size[1], conv.stride[1], conv.padding[1])

    def _padded_pos_embed(self, hw: tuple[int, int], widths: torch.Tensor) -> torch.Tensor:
        """Each line's position embedding resized (bicubic, as :meth:`resized_pos_embed`) to its own valid grid
        (h, width), zero over its padding: what the line gets alone, whatever the batch's widest line. Resampled by
        matrices built from ``widths``, not one interpolation per line, so it traces with a symbolic width."""
        table = tokens_to_map(self.pos_embed, self.grid, self.zero_copy_layout)[0].float()  # (C, gh, gw)
        rows = bicubic_weights(widths.new_full((1,), hw[0]), self.grid[0], hw[0])[0]  # (h, gh)
        cols = bicubic_weights(widths, self.grid[1], hw[1])  # (B, w, gw), zero past each width
        out = torch.einsum("hg,bwv,cgv->bhwc", rows, cols, table).to(self.pos_embed.dtype)
        return out.flatten(1, 2)

    def forward(self, x: torch.Tensor, widths: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """(B, C, H, W) map -> spatial tokens (B, h*w, dim), their grid (h, w), and the class token or None.

        ``widths`` (B,), optional: the valid widths of a right-padded batch of lines (input columns); the tokens
        beyond each line's valid columns are zeroed after every step and never attended to, so a line's tokens do
        not depend on its batch (the next stage takes :meth:`token_widths`)."""
        x, hw = self.patch_embed(x)
        keep = None
        if widths is not None:
            widths = self.token_widths(widths)
            keep = column_mask(widths, hw).unsqueeze(-1).to(x.dtype)
            x = x * keep
        if self.pos_embed is not None:
            x = x + (self.resized_pos_embed(hw) if widths is None else self._padded_pos_embed(hw, widths))
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            keep = None if keep is None else torch.cat((keep.new_ones(x.shape[0], 1, 1), keep), dim=1)
        x = self.pos_drop(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, hw, widths)
            else:
                x = block(x, hw, widths)
            if keep is not None:
                x = x * keep
        if self.cls_token is None:
            return x, hw, None
        return x[:, 1:], hw, x[:, :1]


def _per_stage(name: str, value, num_stages: int) -> list:
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * num_stages
    if len(values) != num_stages:
        raise ValueError(
            f"CvT: `{name}` has {len(values)} entries but the model has {num_stages} stages (len(depths)); "
            f"give one value per stage, e.g. {name}={[values[0]] * num_stages}"
        )
    return values


def _check_choice(name: str, values: list, valid: Sequence[str]) -> None:
    for v in values:
        if v not in valid:
            raise ValueError(f"CvT: unknown {name} {v!r}; valid choices are {', '.join(map(repr, valid))}")


class CvT(nn.Module):
    """A staged CvT backbone with a linear classifier. Per-stage arguments take one value per stage
    (a single value is broadcast to all stages)."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        depths: Sequence[int] = (1, 2, 10),
        dims: Sequence[int] = (64, 192, 384),
        heads: Sequence[int] = (1, 3, 6),
        embed_type: str | Sequence[str] = "conv",
        embed_kernel: int | Sequence[int] = (7, 3, 3),
        embed_stride: int | Sequence[int] = (4, 2, 2),
        embed_padding: int | Sequence[int] = (2, 1, 1),
        proj: str | Sequence[str] = "dw_bn",
        proj_kernel: int | Sequence[int] = 3,
        q_stride: int | Sequence[int] = 1,
        kv_stride: int | Sequence[int] = 2,
        pos_embed: bool | Sequence[bool] = False,
        cls_token: bool | Sequence[bool] = (False, False, True),
        mlp_ratio: float | Sequence[float] = 4.0,
        qkv_bias: bool | Sequence[bool] = True,
        drop_path: float | Sequence[float] = (0.0, 0.0, 0.1),
        act: str = "quick_gelu",
        attn_scale: str = "dim",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        given = locals()  # the constructor's arguments by name, as models.spec lists them
        n = len(depths)
        if n == 0:
            raise ValueError("CvT: `depths` is empty; give at least one stage")
        stage_args = {name: _per_stage(name, given[name], n) for name in STAGE_ARG_NAMES}
        _check_choice("embed_type", stage_args["embed_type"], EMBED_TYPES)
        _check_choice("proj", stage_args["proj"], PROJ_TYPES)
        _check_choice("act", [act], tuple(ACTIVATIONS))
        _check_choice("attn_scale", [attn_scale], ATTN_SCALES)
        for i, (dim, h) in enumerate(zip(stage_args["dims"], stage_args["heads"])):
            if h < 1 or dim % h:
                raise ValueError(f"CvT: stage {i} width {dim} is not divisible by its {h} heads; "
                                 f"choose heads that divide the width (e.g. {dim // 64 or 1})")
        if any(s != 1 for s in stage_args["q_stride"]):
            raise ValueError("CvT: q_stride must be 1 in every stage: the residual connection needs one query "
                             "per token (stride k and v with kv_stride instead)")
        if any(stage_args["cls_token"][:-1]):
            raise ValueError("CvT: a class token is only supported in the last stage (the next stage's "
                             "token embedding is a convolution over the spatial map); set cls_token only last")

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = img_size
        self.stage_args = stage_args
        self.depths = list(depths)
        self.options = {name: given[name] for name in OPTION_ARG_NAMES}
        self.num_features = self.head_hidden_size = stage_args["dims"][-1]
        self.num_prefix_tokens = int(stage_args["cls_token"][-1])
        self.global_pool = "token" if self.num_prefix_tokens else "avg"
        grids = self.token_grids(img_size)  # validates that the strides leave tokens at img_size
        reduction = 1
        self.feature_info = []  # per stage, for timm's features_only wrapper
        for i, (dim, stride) in enumerate(zip(stage_args["dims"], stage_args["embed_stride"])):
            reduction *= stride
            self.feature_info.append(dict(num_chs=dim, reduction=reduction, module=f"stages.{i}"))

        self.stages = nn.ModuleList()
        chans = in_chans
        for i in range(n):
            a = {k: v[i] for k, v in stage_args.items()}
            self.stages.append(Stage(chans, depths[i], grids[i], a, act=act, attn_scale=attn_scale, drop=drop_rate,
                                     attn_drop=attn_drop_rate, eps=norm_eps))
            chans = a["dims"]
        self.norm = nn.LayerNorm(self.num_features, eps=norm_eps)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.zero_copy_layout = FAST_PATHS["zero_copy_layout"]
        self.apply(self._init_weights)
        for stage in self.stages:
            for p in (stage.pos_embed, stage.cls_token):
                if p is not None:
                    trunc_normal_(p, std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def token_grids(self, img_size: int | tuple[int, int]) -> list[tuple[int, int]]:
        """The (h, w) token grid of every stage for an input image size; raises if a stage gets no tokens."""
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        a, grids = self.stage_args, []
        for i in range(len(a["dims"])):
            k, s, p = a["embed_kernel"][i], a["embed_stride"][i], a["embed_padding"][i]
            if a["embed_type"][i] in NON_OVERLAPPING:
                k, p = s, 0
            h, w = conv_out_size(h, k, s, p), conv_out_size(w, k, s, p)
            if h < 1 or w < 1:
                raise ValueError(f"CvT: input {img_size} is too small: stage {i}'s token embedding (kernel {k}, "
                                 f"stride {s}, padding {p}) leaves no tokens; use a larger image or smaller strides")
            grids.append((h, w))
        return grids

    def constructor_args(self) -> dict:
        """The arguments that rebuild this model as it is now (its current head), e.g. for export metadata."""
        return dict(num_classes=self.num_classes, in_chans=self.in_chans, img_size=self.img_size,
                    depths=self.depths, **self.stage_args, **self.options)

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (besides norms and biases, which timm exempts by ndim)."""
        return {n for n, _ in self.named_parameters() if n.endswith(("cls_token", "pos_embed"))}

    def set_fast_paths(self, enabled: bool | None = None, **levers: bool) -> dict[str, bool]:
        """Set speed levers (see ``FAST_PATHS``) on every module they steer: ``enabled`` sets all of them,
        keywords set single ones; no arguments changes nothing. Returns the settings before the call.
        A compiled model traces the new settings on its next call."""
        settings = _lever_settings(enabled, levers)
        previous = {}
        for module in self.modules():
            for lever in FAST_PATHS:
                if isinstance(getattr(module, lever, None), bool):
                    previous.setdefault(lever, getattr(module, lever))
                    if lever in settings:
                        setattr(module, lever, settings[lever])
        return {lever: previous[lever] for lever in FAST_PATHS if lever in previous}

    # ---------------------------------------------------------------- timm's model interface (cvt_lab.timm_registry)

    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for timm's layer-wise learning-rate decay: the first embedding, then per block."""
        return dict(stem=r"^stages\.0\.(patch_embed|pos_embed)",
                    blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.blocks\.(\d+)", None),
                                                             (r"^stages\.(\d+)", (0,)), (r"^norm", (99999,))])

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block in the backward pass instead of keeping its activations (less memory)."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for ``num_classes`` (0: none, the forward returns pooled features); ``global_pool``:
        ``token`` (the class token), ``avg`` (mean of the spatial tokens) or ``""`` (no pooling)."""
        if global_pool is not None:
            _check_choice("global_pool", [global_pool], ("token", "avg", ""))
            if global_pool == "token" and not self.num_prefix_tokens:
                raise ValueError("CvT: global_pool='token' needs a class token in the last stage; use 'avg'")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self._init_weights(self.head)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"CvT: expected images of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        self.token_grids(tuple(x.shape[-2:]))  # a clear error before any work, not a shape error deep inside

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Every selected stage's spatial map (``NCHW``, or ``NHWC``), class token left out; ``indices``: the
        last n stages (int), the listed ones, or all (None). Also returns :meth:`forward_features`' output
        unless ``intermediates_only``. ``norm`` applies the final LayerNorm to the last stage's map."""
        _check_choice("output_fmt", [output_fmt], ("NCHW", "NHWC"))
        self._check_input(x)
        take, last_taken = feature_take_indices(len(self.stages), indices)
        stages = self.stages[:last_taken + 1] if stop_early or intermediates_only else self.stages
        intermediates = []
        for i, stage in enumerate(stages):
            tokens, hw, cls_token = stage(x)
            x = tokens_to_map(tokens, hw, self.zero_copy_layout)
            if i in take:
                inter = self.norm(tokens) if norm and i == len(self.stages) - 1 else tokens
                inter = inter.reshape(inter.shape[0], hw[0], hw[1], -1)
                intermediates.append(inter.permute(0, 3, 1, 2) if output_fmt == "NCHW" else inter)
        if intermediates_only:
            return intermediates
        if len(stages) < len(self.stages):  # stopped early: the last stage run's tokens, not normalized
            return tokens, intermediates
        return self._final_tokens(tokens, cls_token), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the norm and head) for a feature extractor."""
        take, last_taken = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:last_taken + 1]
        if prune_norm or last_taken < len(self.feature_info) - 1:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def _final_tokens(self, tokens: torch.Tensor, cls_token: torch.Tensor | None) -> torch.Tensor:
        return self.norm(tokens if cls_token is None else torch.cat((cls_token, tokens), dim=1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> the last stage's normalized tokens, unpooled: (B, prefix + h*w, C), the class
        token first when the model has one (``num_prefix_tokens``), as timm's transformers return them."""
        self._check_input(x)
        cls_token = None
        for stage in self.stages:
            tokens, hw, cls_token = stage(x)
            x = tokens_to_map(tokens, hw, self.zero_copy_layout)
        return self._final_tokens(tokens, cls_token)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """:meth:`forward_features`' tokens -> pooled features (``pre_logits``) or logits."""
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
