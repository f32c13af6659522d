"""CvT's building blocks: tokens <-> maps, the MLP, the convolutional token embedding and the convolutional
attention, and the speed levers (``FAST_PATHS``) they carry as bool attributes of the same names.

The levers change how, not what, is computed: each keeps fp32 results within float rounding of the plain
formulation. The module-level functions take them as arguments, so no forward reads global state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from timm.layers import QuickGELU
from torch import nn

# Speed levers and their defaults (all on). Each keeps the numerics (fp32 logits within float rounding of the
# plain formulation) and can be switched off, one by one, to measure its effect, or all at once to get the
# plain formulation. A module that a lever steers carries it as a bool attribute of the same name.
FAST_PATHS: Mapping[str, bool] = MappingProxyType({
    "silu_mlp": True,  # QuickGELU as one SiLU kernel, its 1.702 scalings folded into the fc1 / fc2 GEMMs
    "fused_attention": True,  # scaled_dot_product_attention (flash) instead of matmul -> softmax -> matmul
    "lowp_cpu_attention": True,  # ...except bf16/fp16 on CPU, where the explicit form is faster
    "zero_copy_layout": True,  # tokens <-> maps as channels-last views, never a copy
    "fp32_strided_dwconv": True,  # CPU autocast: strided depthwise convs (k, v) with gradients run in fp32
})


def tokens_to_map(tokens: torch.Tensor, hw: tuple[int, int], zero_copy_layout: bool = True) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) map; a channels-last view when ``tokens`` is contiguous."""
    b, _, c = tokens.shape
    x = tokens.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)
    return x if zero_copy_layout else x.contiguous()


def map_to_tokens(x: torch.Tensor, zero_copy_layout: bool = True) -> torch.Tensor:
    """(B, C, H, W) map -> (B, H*W, C) tokens; free for a channels-last map."""
    tokens = x.permute(0, 2, 3, 1).flatten(1, 2)
    return tokens if zero_copy_layout else tokens.contiguous()


def conv_out_size(size, kernel: int, stride: int, padding: int, ceil_mode: bool = False):
    """Output length of a convolution / pooling window along one axis (an int, or a tensor of lengths: the valid
    widths of right-padded lines after a strided convolution)."""
    span = size + 2 * padding - kernel
    return (-(-span // stride) if ceil_mode else span // stride) + 1


BICUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution coefficient


def bicubic_weights(out_sizes: torch.Tensor, in_size: int, length: int) -> torch.Tensor:
    """(B, length, in_size): bicubic resampling of ``in_size`` samples to ``out_sizes[b]`` samples, as one matrix
    per row, zero past each ``out_sizes[b]``: ``F.interpolate(mode="bicubic", align_corners=False)`` along one axis
    (its source positions, coefficients and clamped border taps), up to float rounding.

    A matrix rather than ``F.interpolate``: each row of a batch gets its own output size from a tensor, so the
    resampling traces with a symbolic width (``torch.export``, ONNX) instead of one call per size."""
    positions = torch.arange(length, device=out_sizes.device, dtype=torch.float32)
    scale = in_size / out_sizes.to(torch.float32)  # PyTorch: input / output size, in float for float inputs
    source = scale[:, None] * (positions + 0.5) - 0.5
    start = source.floor()
    t = source - start
    a = BICUBIC_A

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    taps = torch.arange(in_size, device=out_sizes.device)
    weights = torch.zeros(*source.shape, in_size, device=out_sizes.device)
    for offset, coeff in ((-1, far(t + 1)), (0, near(t)), (1, near(1 - t)), (2, far(2 - t))):
        index = (start.long() + offset).clamp(0, in_size - 1)  # the border sample repeats, as PyTorch's
        weights = weights + (index[..., None] == taps).to(weights.dtype) * coeff[..., None]
    inside = positions[None, :] < out_sizes[:, None]
    return weights * inside[..., None].to(weights.dtype)


QUICK_GELU_ALPHA = 1.702  # QuickGELU(x) = x * sigmoid(1.702 x) = silu(1.702 x) / 1.702


def _scaled_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``alpha * (x @ weight.T) + bias`` as one GEMM: the scaling rides in the GEMM's alpha, no extra pass."""
    x2 = x.reshape(-1, x.shape[-1])
    if bias is None:
        out = torch.mm(x2, weight.t()).mul_(alpha)
    else:
        out = torch.addmm(bias, x2, weight.t(), alpha=alpha)
    return out.view(*x.shape[:-1], weight.shape[0])


class Mlp(nn.Module):
    """fc1 -> activation -> fc2, with timm's ``Mlp`` module names (``fc1``, ``act``, ``drop1``, ``norm``, ``fc2``,
    ``drop2``), so checkpoints load unchanged.

    With QuickGELU the activation runs as one SiLU kernel: ``x * sigmoid(1.702 x) = silu(1.702 x) / 1.702``, the
    1.702 folded into fc1's GEMM (its alpha, and the bias scaled) and the 1 / 1.702 into fc2's GEMM (alpha). In
    eager mode that replaces three elementwise passes forward and about five backward with one each, and keeps
    one activation fewer for backward; the result equals the textbook formula up to float rounding.
    """

    def __init__(self, in_features: int, hidden_features: int, act_layer: type[nn.Module] = nn.GELU,
                 drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)
        self.silu_mlp = FAST_PATHS["silu_mlp"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.silu_mlp and isinstance(self.act, QuickGELU):
            a = QUICK_GELU_ALPHA
            bias = self.fc1.bias * a if self.fc1.bias is not None else None
            h = _scaled_linear(x, self.fc1.weight, bias, a)
            h = F.silu(h)
            return self.drop2(_scaled_linear(self.drop1(h), self.fc2.weight, self.fc2.bias, 1.0 / a))
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class ConvEmbed(nn.Module):
    """Token embedding: Conv2d (overlapping, or kernel == stride for patches) -> tokens -> LayerNorm, or no
    norm (``norm=False``: ViT/DeiT's patch embedding, a plain linear projection of each patch)."""

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int, padding: int, eps: float = 1e-5,
                 norm: bool = True):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(dim, eps=eps) if norm else nn.Identity()
        self.zero_copy_layout = FAST_PATHS["zero_copy_layout"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(map_to_tokens(x, self.zero_copy_layout)), hw


def build_projection(kind: str, dim: int, kernel: int, stride: int) -> nn.Module | None:
    """The spatial part of a q/k/v projection, on a (B, C, H, W) map. ``None`` means tokens as they are."""
    if kind == "dw_bn":
        conv = nn.Conv2d(dim, dim, kernel, stride=stride, padding=kernel // 2, groups=dim, bias=False)
        return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(dim)))
    if kind == "avg":
        return nn.AvgPool2d(kernel, stride=stride, padding=kernel // 2, ceil_mode=True)
    return None


def depthwise_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor,
                      fp32_strided_dwconv: bool = True) -> torch.Tensor:
    """``bn(conv(x))`` for the ``dw_bn`` projection. Under CPU autocast, a strided depthwise convolution that
    needs gradients (k and v in training) runs in fp32: oneDNN's bf16 backward kernel for it is ~5x slower than
    fp32 on CPU, and its FLOPs are negligible either way. (Folding BatchNorm into the convolution for inference
    was measured too and dropped: no measurable gain, see docs/performance.md.)"""
    if (fp32_strided_dwconv and x.device.type == "cpu" and conv.stride != (1, 1)
            and torch.is_autocast_enabled("cpu") and torch.is_grad_enabled() and conv.weight.requires_grad):
        with torch.autocast("cpu", enabled=False):
            return bn(conv(x.float()))
    return bn(conv(x))


def column_mask(widths: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, h*w) bool: which tokens of a right-padded (h, w) grid lie within each row's valid width ``widths``."""
    cols = torch.arange(hw[1], device=widths.device)
    return (cols < widths[:, None]).unsqueeze(1).expand(-1, hw[0], -1).reshape(widths.shape[0], -1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout_p: float = 0.0,
              fused_attention: bool = True, lowp_cpu_attention: bool = True,
              attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v over (B, heads, N, head_dim) tensors; ``attn_mask`` (bool, broadcast to
    (B, heads, N, N_k), True: attend) leaves keys out, e.g. the right padding of variable-width lines.

    fp32 and every CUDA dtype: PyTorch's fused ``scaled_dot_product_attention`` (flash kernel; no N x N matrix
    kept for backward). bf16/fp16 on CPU: explicit matmul -> softmax -> matmul, which is ~1.3-3x faster there
    than the CPU flash kernel in reduced precision (measured in docs/performance.md).
    """
    lowp_cpu = lowp_cpu_attention and q.device.type == "cpu" and q.dtype != torch.float32
    if fused_attention and not lowp_cpu:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
    logits = torch.matmul(q * scale, k.transpose(-2, -1))
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf"))
    probs = logits.softmax(dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs, v)


class ConvAttention(nn.Module):
    """Multi-head attention whose q/k/v first pass through a spatial projection of the token map."""

    def __init__(
        self,
        dim: int,
        heads: int,
        proj: str = "dw_bn",
        kernel: int = 3,
        kv_stride: int = 2,
        qkv_bias: bool = True,
        with_cls_token: bool = False,
        attn_scale: str = "dim",
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.heads = heads
        self.with_cls_token = with_cls_token
        self.scale = (dim if attn_scale == "dim" else dim // heads) ** -0.5
        self.attn_drop = attn_drop
        # Released semantics: average pooling only shrinks k and v; q stays the plain tokens.
        self.conv_proj_q = build_projection("linear" if proj == "avg" else proj, dim, kernel, 1)
        self.conv_proj_k = build_projection(proj, dim, kernel, kv_stride)
        self.conv_proj_v = build_projection(proj, dim, kernel, kv_stride)
        # k/v's geometry along the width (kernel, stride, padding, ceil_mode): the valid key width of a padded line
        self.kv_geometry = (1, 1, 0, False) if proj == "linear" else (kernel, kv_stride, kernel // 2, proj == "avg")
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_dropout = nn.Dropout(proj_drop)
        self.fused_attention = FAST_PATHS["fused_attention"]
        self.lowp_cpu_attention = FAST_PATHS["lowp_cpu_attention"]
        self.zero_copy_layout = FAST_PATHS["zero_copy_layout"]
        self.fp32_strided_dwconv = FAST_PATHS["fp32_strided_dwconv"]

    def _spatial(self, projection: nn.Module | None, x_map: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if projection is None:
            return tokens
        if isinstance(projection, nn.Sequential):  # dw_bn
            x_map = depthwise_conv_bn(projection.conv, projection.bn, x_map, self.fp32_strided_dwconv)
        else:
            x_map = projection(x_map)
        return map_to_tokens(x_map, self.zero_copy_layout)

    def _kv_grid(self, hw: tuple[int, int]) -> tuple[int, int]:
        kernel, stride, padding, ceil_mode = self.kv_geometry
        return tuple(conv_out_size(n, kernel, stride, padding, ceil_mode) for n in hw)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def key_mask(self, widths: torch.Tensor, kv_hw: tuple[int, int]) -> torch.Tensor:
        """(B, 1, 1, N_k) bool: the keys within each line's valid width after the k/v projection (class token kept)."""
        kernel, stride, padding, ceil_mode = self.kv_geometry
        mask = column_mask(conv_out_size(widths, kernel, stride, padding, ceil_mode), kv_hw)
        if self.with_cls_token:
            mask = torch.cat((mask.new_ones(mask.shape[0], 1), mask), dim=1)
        return mask[:, None, None, :]

    def forward(self, x: torch.Tensor, hw: tuple[int, int], widths: torch.Tensor | None = None) -> torch.Tensor:
        """``widths`` (B,), optional: each row's valid token columns of a right-padded batch of lines; the padding
        is zeroed before the convolutions (as the zero padding of a line alone) and left out of the keys."""
        b, n, c = x.shape
        if self.with_cls_token:  # the class token skips the spatial projection
            cls_token, x = x[:, :1], x[:, 1:]
        x_map = tokens_to_map(x, hw, self.zero_copy_layout)
        if widths is not None:
            x_map = x_map * (torch.arange(hw[1], device=x.device) < widths[:, None]).to(x.dtype)[:, None, None, :]
        q = self._spatial(self.conv_proj_q, x_map, x)
        k = self._spatial(self.conv_proj_k, x_map, x)
        v = self._spatial(self.conv_proj_v, x_map, x)
        attn_mask = None if widths is None else self.key_mask(widths, self._kv_grid(hw))
        if self.with_cls_token:
            q, k, v = (torch.cat((cls_token, t), dim=1) for t in (q, k, v))
        q, k, v = self._heads(self.proj_q(q)), self._heads(self.proj_k(k)), self._heads(self.proj_v(v))
        out = attention(q, k, v, self.scale, self.attn_drop if self.training else 0.0,
                        self.fused_attention, self.lowp_cpu_attention, attn_mask)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_dropout(self.proj(out))
