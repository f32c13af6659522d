"""Line recognizers: per-column frames of logits over the charset plus the CTC blank, for right-padded batches of
variable-width lines (height fixed).

:class:`CvTLineRecognizer` is a :class:`cvt_lab.models.CvT` backbone (any preset and every ablation axis:
position embedding, conv/patch token embedding, k/v stride, projection) whose last stage's tokens are normalized,
averaged over height into one frame per token column and classified by a linear head. :class:`CRNN` is the
reference (conv + BiLSTM, as PyLaia's and kraken's defaults), as DeiT-S is for classification.

Both take ``widths`` (the valid pixel columns of each line): the padding is kept at zero after every operation and
out of attention and of the LSTM, so a line's logits over its valid frames do not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cvt_lab.models.cvt import CvT
from cvt_lab.models.layers import conv_out_size, tokens_to_map


class LineTooNarrowError(ValueError):
    """A line gives no output frame: the model's strides need a wider image."""


def smallest_width(frame_widths: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """The narrowest line (px) that still gives one frame through ``frame_widths``."""
    w = 1
    while int(frame_widths(torch.tensor([w]))) < 1:
        w += 1
    return w


def _check_frames(frame_widths: Callable[[torch.Tensor], torch.Tensor], widths: torch.Tensor) -> None:
    if torch.compiler.is_exporting():  # a check of the values: no graph op (an exported graph states its minimum)
        return
    frames = frame_widths(widths)
    if bool((frames < 1).any()):  # the smallest width is searched only for the message
        narrow = int(widths[frames < 1].min())
        raise LineTooNarrowError(f"a line {narrow} px wide is too narrow for the model's strides: lines need at "
                                 f"least {smallest_width(frame_widths)} px at this height (pad narrow lines on the "
                                 "right, or use smaller strides)")


class CvTLineRecognizer(nn.Module):
    """CvT backbone -> LayerNorm -> mean over the token rows -> linear, one frame per last-stage token column."""

    def __init__(self, backbone: CvT, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.in_chans = backbone.in_chans
        self.num_classes = num_classes
        self.head = nn.Linear(backbone.num_features, num_classes)
        CvT._init_weights(self.head)

    def frame_widths(self, widths: torch.Tensor) -> torch.Tensor:
        """Frames (valid token columns of the last stage) of lines ``widths`` pixels wide."""
        for stage in self.backbone.stages:
            widths = stage.token_widths(widths)
        return widths

    def min_width(self) -> int:
        return smallest_width(self.frame_widths)

    def forward(self, x: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) right-padded lines (zero background), valid widths (B,) -> logits (B, frames, classes)."""
        if widths is not None:
            _check_frames(self.frame_widths, widths)
        else:
            self.backbone._check_input(x)
        for stage in self.backbone.stages:
            tokens, hw, _ = stage(x, widths)  # a class token, if the preset has one, is not a frame
            if widths is not None:
                widths = stage.token_widths(widths)
            x = tokens_to_map(tokens, hw, self.backbone.zero_copy_layout)
        tokens = self.backbone.norm(tokens)
        frames = tokens.view(tokens.shape[0], hw[0], hw[1], -1).mean(1)
        return self.head(frames)


def build_cvt_line_recognizer(name: str = "custom", compile: bool = False, compile_mode: str | None = None,
                              _target_: str | None = None, num_classes: int = 0, img_size: int = 32,
                              **kwargs: Any) -> CvTLineRecognizer:
    """A CvT line recognizer from the model config (``conf/model/htr_cvt.yaml``; the CvT constructor's arguments):
    ``num_classes`` is the charset plus the blank, ``img_size`` the line height."""
    model = CvTLineRecognizer(CvT(num_classes=0, img_size=img_size, **kwargs), num_classes)
    model.preset = name
    if compile or compile_mode is not None:
        model.compile(mode=compile_mode)
    return model


LSTM_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # nn.LSTM's per layer and direction, in its order


@torch.library.custom_op("cvt_lab::bilstm_layer", mutates_args=())
def bilstm_layer(x: torch.Tensor, lengths: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                 b_hh: torch.Tensor, w_ih_r: torch.Tensor, w_hh_r: torch.Tensor, b_ih_r: torch.Tensor,
                 b_hh_r: torch.Tensor) -> torch.Tensor:
    """One bidirectional LSTM layer (``nn.LSTM``'s weights of a layer, forward then ``_reverse``) over each line's
    first ``lengths[b]`` frames of (B, T, C) ``x``, zero after them: what a packed sequence computes.

    The CRNN's forward under ``torch.export``: the packing's sizes are data, and tracing ``nn.LSTM`` fixes the
    sequence length, while an op of its own keeps the width symbolic and becomes ONNX's ``LSTM`` with
    ``sequence_lens`` (:mod:`cvt_lab.htr.export`). Here each line's frames are reversed within its length for the
    backward direction, so it matches the packed LSTM to float rounding."""
    steps = torch.arange(x.shape[1], device=x.device)
    valid = steps < lengths[:, None]
    flip = torch.where(valid, lengths[:, None] - 1 - steps, steps)[..., None]  # reversal within each length
    h0 = x.new_zeros(1, x.shape[0], w_hh.shape[1])
    forward = torch.lstm(x, (h0, h0), [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0, False, False, True)[0]
    backward = torch.lstm(x.gather(1, flip.expand_as(x)), (h0, h0), [w_ih_r, w_hh_r, b_ih_r, b_hh_r], True, 1, 0.0,
                          False, False, True)[0]
    return torch.cat((forward, backward.gather(1, flip.expand_as(backward))), -1) * valid[..., None].to(x.dtype)


@bilstm_layer.register_fake
def _bilstm_layer_shape(x: torch.Tensor, lengths: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                        *weights: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], x.shape[1], 2 * w_hh.shape[1])


class CRNN(nn.Module):
    """Conv blocks (3x3 conv -> BatchNorm -> ReLU -> max pool; the first two pool 2x2, the rest 2x1: height only)
    -> mean over height -> BiLSTM -> linear. Frames: width / 4."""

    def __init__(self, num_classes: int, in_chans: int = 1, dims: tuple[int, ...] = (32, 64, 96, 96),
                 hidden: int = 96, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.blocks = nn.ModuleList()
        self.pools = []
        chans = in_chans
        for i, dim in enumerate(dims):
            pool = (2, 2) if i < 2 else (2, 1)
            self.blocks.append(nn.Sequential(nn.Conv2d(chans, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim),
                                              nn.ReLU(inplace=True), nn.MaxPool2d(pool, pool)))
            self.pools.append(pool[1])
            chans = dim
        self.rnn = nn.LSTM(chans, hidden, num_layers=layers, bidirectional=True, batch_first=True,
                           dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(2 * hidden, num_classes)

    def frame_widths(self, widths: torch.Tensor) -> torch.Tensor:
        for p in self.pools:
            widths = conv_out_size(widths, p, p, 0)
        return widths

    def min_width(self) -> int:
        return smallest_width(self.frame_widths)

    def forward(self, x: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
        if widths is not None:
            _check_frames(self.frame_widths, widths)
        for block, p in zip(self.blocks, self.pools):
            x = block(x)
            if widths is not None:  # the padding back to zero: the next 3x3 conv reads it at each line's right edge
                widths = conv_out_size(widths, p, p, 0)
                x = x * (torch.arange(x.shape[-1], device=x.device) < widths[:, None]).to(x.dtype)[:, None, None, :]
        seq = x.mean(2).transpose(1, 2)  # (B, frames, C)
        if widths is None:
            out, _ = self.rnn(seq)
        elif torch.compiler.is_exporting():  # packing is data-dependent: one traceable op a layer (ONNX's LSTM)
            out = seq
            for layer in range(self.rnn.num_layers):
                out = bilstm_layer(out, widths, *(getattr(self.rnn, f"{name}_l{layer}{direction}")
                                                  for direction in ("", "_reverse") for name in LSTM_WEIGHTS))
        else:  # packed: the backward direction starts at each line's own last frame
            packed = pack_padded_sequence(seq, widths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=seq.shape[1])
        return self.head(out)


def build_crnn(name: str = "crnn", compile: bool = False, compile_mode: str | None = None,
               _target_: str | None = None, num_classes: int = 0, in_chans: int = 1,
               crnn_dims: tuple[int, ...] = (32, 64, 96, 96), rnn_hidden: int = 96, rnn_layers: int = 2,
               **_cvt_args: Any) -> CRNN:
    """The CRNN from ``conf/model/htr_crnn.yaml`` (:class:`cvt_lab.config.CRNNConfig`); the CvT arguments that every
    model node carries are not used by it."""
    model = CRNN(num_classes, in_chans, tuple(crnn_dims), rnn_hidden, rnn_layers)
    model.preset = name
    if compile or compile_mode is not None:
        model.compile(mode=compile_mode)
    return model
