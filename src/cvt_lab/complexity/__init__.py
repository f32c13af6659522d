"""Model size the way the paper counts it: parameters and multiply-adds ("FLOPs"), attention matmuls included.

``torch.utils.flop_counter.FlopCounterMode`` counts matmuls and convolutions (2 FLOPs per MAC); the
forward runs on the ``meta`` device, where ``scaled_dot_product_attention`` is counted (on CPU it is
not), and costs no compute and no memory, so even CvT-W24 at 384 counts in a fraction of a second.
Normalization, activations, softmax and pooling are not counted, as in the paper.

    python -m cvt_lab.complexity model=cvt13 [image_size=384] [model.kv_stride=[1,1,1]]
    python -m cvt_lab.complexity --table2 experiments/reports/table2.md

The command line is :mod:`cvt_lab.complexity.__main__`; the Table 2 report (our counts beside the paper's) is
:mod:`cvt_lab.report.table2`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int
    image_size: int

    def __str__(self) -> str:
        return f"params {self.params / 1e6:.3f}M, MACs {self.macs / 1e9:.3f}G at {self.image_size}x{self.image_size}"

    def as_dict(self) -> dict:
        return asdict(self)


def count(model: nn.Module, image_size: int = 224, in_chans: int | None = None, width: int | None = None) -> Complexity:
    """Parameters and multiply-adds of one forward pass on a ``image_size`` square image (batch 1, eval); ``width``:
    an image ``image_size`` high and ``width`` wide instead (a text line)."""
    in_chans = in_chans or getattr(model, "in_chans", 3)
    params = sum(p.numel() for p in model.parameters())
    meta = {n: torch.empty_like(t, device="meta") for n, t in (*model.named_parameters(), *model.named_buffers())}
    was_training = model.training
    model.eval()
    try:
        # eager even when the model is compiled: counting needs the operators, not a compiled graph
        with FlopCounterMode(display=False) as counter, torch.no_grad(), torch.compiler.set_stance("force_eager"):
            functional_call(model, meta, (torch.empty(1, in_chans, image_size, width or image_size, device="meta"),))
    finally:
        model.train(was_training)
    return Complexity(params=params, macs=counter.get_total_flops() // 2, image_size=image_size)


def count_preset(name: str, image_size: int | None = None, **overrides) -> Complexity:
    """Count a preset without materializing its weights (built on the meta device)."""
    from cvt_lab.models import create_model

    with torch.device("meta"):
        model = create_model(name, **overrides)
    return count(model, image_size or model.img_size)


def __getattr__(name: str):
    if name in ("main", "table2_markdown"):  # the command line and Table 2's report, a layer above (as before)
        import importlib

        return getattr(importlib.import_module("cvt_lab.complexity.__main__" if name == "main"
                                               else "cvt_lab.report.table2"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
