"""ONNX export of a line recognizer (the CvT line recognizer or the CRNN), with a dynamic batch and line width.

The graph: inputs ``images`` (B, C, H, W) float, right-padded lines (ink 1 on background 0, as training saw them)
and ``widths`` (B,) int64, each line's valid pixel columns; outputs ``logits`` (B, T, classes) over the charset plus
the CTC blank (class 0) and ``frames`` (B,) int64, each line's valid frames (greedy decoding reads ``logits[b,
:frames[b]]``). B, W and T are dynamic; H is the line height the model was trained at. The charset and the facts
needed to feed the graph (height, blank, the narrowest width the graph takes) are in the ONNX file's
``metadata_props`` and in a JSON file beside it (:func:`line_metadata`, one dict written twice).

Every export is checked with onnxruntime against PyTorch: single lines at two widths other than the traced ones,
and a padded batch of both (:func:`check_with_onnxruntime`).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvt_lab.htr.module import LineRecognizer

log = logging.getLogger(__name__)

METADATA_PREFIX = "cvt_lab."  # ONNX metadata_props keys: cvt_lab.charset, cvt_lab.line_height, ...
TOLERANCE = 1e-4  # max |diff| of onnxruntime's logits from PyTorch's beyond which the export warns


class LineGraph(nn.Module):
    """What the ONNX graph computes: a line recognizer's logits and each line's number of valid frames."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(images, widths), self.model.frame_widths(widths)


def charset_file(out: Path) -> Path:
    """The JSON beside an ONNX file: ``model.onnx`` -> ``model.charset.json``."""
    return out.with_suffix(".charset.json")


def line_metadata(recognizer: LineRecognizer, min_width: int) -> dict[str, Any]:
    """What a user of the ONNX graph needs besides it: the charset (class ``i + 1`` is ``charset[i]``, class 0 the
    CTC blank), the line height, the narrowest line width the graph takes (pad narrower lines on the right with
    background), the polarity of the input, the model."""
    config = recognizer.hparams.get("model_config") or {}
    return {"charset": list(recognizer.charset.chars), "blank": recognizer.charset.BLANK,
            "line_height": recognizer.line_height, "in_chans": recognizer.model.in_chans, "min_width": min_width,
            "input": "ink 1.0 on background 0.0 (dark-on-light images inverted), right-padded with 0",
            "model": config.get("name", type(recognizer.model).__name__)}


def _bilstm_onnx(x, lengths, w_ih, w_hh, b_ih, b_hh, w_ih_r, w_hh_r, b_ih_r, b_hh_r):
    """:func:`cvt_lab.htr.model.bilstm_layer` as ONNX's bidirectional ``LSTM`` with ``sequence_lens``: the backward
    direction starts at each line's last frame, as PyTorch's packed sequence."""
    from onnx import TensorProto
    from onnxscript import opset18 as op

    def axes(*values: int):
        return op.Constant(value_ints=list(values))

    hidden = w_hh.shape[1]
    # PyTorch's gate order (input, forget, cell, output) -> ONNX's (input, output, forget, cell)
    order = op.Constant(value_ints=[g * hidden + j for g in (0, 3, 1, 2) for j in range(hidden)])

    def gates(w):
        return op.Gather(w, order, axis=0)

    def directions(forward, backward):
        return op.Concat(op.Unsqueeze(forward, axes(0)), op.Unsqueeze(backward, axes(0)), axis=0)

    weights = directions(gates(w_ih), gates(w_ih_r))
    recurrence = directions(gates(w_hh), gates(w_hh_r))
    bias = directions(op.Concat(gates(b_ih), gates(b_hh), axis=0), op.Concat(gates(b_ih_r), gates(b_hh_r), axis=0))
    y, _, _ = op.LSTM(op.Transpose(x, perm=[1, 0, 2]), weights, recurrence, bias,
                      op.Cast(lengths, to=TensorProto.INT32), hidden_size=hidden, direction="bidirectional")
    # (T, directions, B, hidden) -> (B, T, directions * hidden), forward first as PyTorch's; zero after each line
    y = op.Reshape(op.Transpose(y, perm=[2, 0, 1, 3]), axes(0, 0, -1))
    steps = op.Range(op.CastLike(op.Constant(value_int=0), lengths),
                     op.CastLike(op.Squeeze(op.Shape(x, start=1, end=2), axes(0)), lengths),
                     op.CastLike(op.Constant(value_int=1), lengths))
    valid = op.Less(op.Unsqueeze(steps, axes(0)), op.Unsqueeze(lengths, axes(1)))  # (B, T)
    return op.Mul(y, op.Unsqueeze(op.CastLike(valid, y), axes(2)))


def _lines(widths: list[int], chans: int, height: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random lines of ``widths``, right-padded with background to the widest."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.zeros(len(widths), chans, height, max(widths))
    for i, w in enumerate(widths):
        images[i, :, :, :w] = torch.rand(chans, height, w, generator=gen)
    return images, torch.tensor(widths)


def _graph_min_width(program: Any, fallback: int) -> int:
    """The narrowest ``images`` width the exported program was traced valid for (its range constraint)."""
    try:
        width = next(n for n in program.exported_program.graph.nodes if n.op == "placeholder"
                     and n.name == "images").meta["val"].shape[3]
        return max(fallback, int(program.exported_program.range_constraints[width.node.expr].lower))
    except (AttributeError, KeyError, StopIteration, TypeError, ValueError):
        return fallback


def check_with_onnxruntime(out: Path, model: nn.Module, chans: int, height: int, widths: tuple[int, int]
                           ) -> dict[str, float]:
    """Max |diff| of onnxruntime's logits from PyTorch's: each width alone, then both in one padded batch (the
    frame counts must agree exactly)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    diffs = {}
    for name, batch in ((f"width {widths[0]}", [widths[0]]), (f"width {widths[1]}", [widths[1]]),
                        (f"batch of {widths[0]} and {widths[1]}", list(widths))):
        images, lengths = _lines(batch, chans, height, seed=len(diffs))
        logits, frames = session.run(None, {"images": images.numpy(), "widths": lengths.numpy()})
        with torch.no_grad():
            reference = model(images, lengths)
        if frames.tolist() != model.frame_widths(lengths).tolist() or logits.shape != tuple(reference.shape):
            raise RuntimeError(f"the ONNX graph {out} gives {logits.shape[1]} frames ({frames.tolist()}) for lines "
                               f"{batch} px wide where the model gives {reference.shape[1]}: the export is wrong")
        diffs[name] = (torch.from_numpy(logits) - reference).abs().max().item()
    return diffs


def export_line_onnx(recognizer: LineRecognizer, out: Path) -> tuple[Path, dict[str, float]]:
    """Write ``recognizer`` as ONNX at ``out`` (torch's dynamo exporter; batch and width dynamic) with its charset
    in the metadata and beside it (:func:`charset_file`); returns the file and the onnxruntime check's diffs."""
    model = recognizer.model.eval()
    height, chans = recognizer.line_height, model.in_chans
    # traced at two widths, checked at two others: nothing of the traced sizes may stay fixed in the graph
    example = _lines([4 * height, 3 * height], chans, height, seed=100)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # both inputs' first axis is "batch": the exporter says it keeps one name
        warnings.filterwarnings("ignore", message=".*shares the same shape constraints", category=UserWarning)
        program = torch.onnx.export(
            LineGraph(model).eval(), example, dynamo=True, input_names=["images", "widths"],
            output_names=["logits", "frames"], dynamic_shapes=({0: "batch", 3: "width"}, {0: "batch"}),
            verbose=False, custom_translation_table={torch.ops.cvt_lab.bilstm_layer.default: _bilstm_onnx})
    metadata = line_metadata(recognizer, _graph_min_width(program, model.min_width()))
    program.model.metadata_props.update({METADATA_PREFIX + k: json.dumps(v) for k, v in metadata.items()})
    program.save(str(out), external_data=False)
    charset_file(out).write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    widths = (max(metadata["min_width"], 2 * height + 7), 5 * height + 3)
    diffs = check_with_onnxruntime(out, model, chans, height, widths)
    if max(diffs.values()) > TOLERANCE:
        log.warning("cvt_lab: %s: onnxruntime's logits differ from PyTorch's by up to %.3g (> %g): %s", out,
                    max(diffs.values()), TOLERANCE, diffs)
    return out, diffs


__all__ = ["LineGraph", "charset_file", "check_with_onnxruntime", "export_line_onnx",
           "line_metadata"]
