"""Model size the way the paper counts it: parameters and multiply-adds ("FLOPs"), attention matmuls included.

``torch.utils.flop_counter.FlopCounterMode`` counts matmuls and convolutions (2 FLOPs per MAC); the
forward runs on the ``meta`` device, where ``scaled_dot_product_attention`` is counted (on CPU it is
not), and costs no compute and no memory, so even CvT-W24 at 384 counts in a fraction of a second.
Normalization, activations, softmax and pooling are not counted, as in the paper.

    python -m cvt_lab.complexity model=cvt13 [image_size=384] [model.kv_stride=[1,1,1]]
    python -m cvt_lab.complexity --table2 experiments/reports/table2.md
"""

from __future__ import annotations

import sys
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


def count(model: nn.Module, image_size: int = 224, in_chans: int | None = None) -> Complexity:
    """Parameters and multiply-adds of one forward pass on a ``image_size`` square image (batch 1, eval)."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model counts as its original
    in_chans = in_chans or getattr(model, "in_chans", 3)
    params = sum(p.numel() for p in model.parameters())
    meta = {n: torch.empty_like(t, device="meta") for n, t in (*model.named_parameters(), *model.named_buffers())}
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            functional_call(model, meta, (torch.empty(1, in_chans, image_size, image_size, device="meta"),))
    finally:
        model.train(was_training)
    return Complexity(params=params, macs=counter.get_total_flops() // 2, image_size=image_size)


def count_preset(name: str, image_size: int | None = None, **overrides) -> Complexity:
    """Count a preset without materializing its weights (built on the meta device)."""
    from cvt_lab.models import create_model

    with torch.device("meta"):
        model = create_model(name, **overrides)
    return count(model, image_size or model.img_size)


# The paper's complexity claims: (label, preset, image size, overrides, paper params (M), paper GMACs).
PAPER_COMPLEXITY = [
    ("CvT-13 (Table 2)", "cvt13", 224, {}, 19.98, 4.53),
    ("CvT-21 (Table 2)", "cvt21", 224, {}, 31.54, 7.13),
    ("CvT-W24 (Table 2)", "cvtw24", 224, {}, 276.7, 60.86),
    ("CvT-13 at 384 (Table 3)", "cvt13", 384, {}, 20.0, 16.3),
    ("CvT-21 at 384 (Table 3)", "cvt21", 384, {}, 32.0, 24.9),
    ("CvT-W24 at 384 (Table 3)", "cvtw24", 384, {}, 277.0, 193.2),
    ("CvT-13, k/v stride 1 (Table 7)", "cvt13", 224, {"kv_stride": 1}, 20.0, 6.55),
    ("DeiT-S (Table 3/5)", "deit_s", 224, {}, 22.0, 4.6),
]


def table2_markdown() -> str:
    rows = [
        "# Complexity: the paper's numbers beside ours",
        "",
        "Made by `make table2` (`python -m cvt_lab.complexity --table2 ...`): parameters and multiply-adds",
        "counted from the model definition (`cvt_lab.complexity.count`, attention matmuls included).",
        "",
        "| model | size | params (paper) | params (ours) | diff | GMACs (paper) | GMACs (ours) | diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, name, size, overrides, p_params, p_macs in PAPER_COMPLEXITY:
        c = count_preset(name, size, **overrides)
        ours_p, ours_m = c.params / 1e6, c.macs / 1e9
        rows.append(f"| {label} | {size} | {p_params:.2f}M | {ours_p:.3f}M | {100 * (ours_p / p_params - 1):+.2f}% "
                    f"| {p_macs:.2f} | {ours_m:.3f} | {100 * (ours_m / p_macs - 1):+.2f}% |")
    rows += ["", "Table 3 prints params rounded to whole millions (20M, 32M, 277M); the diff there is against that rounding.", ""]
    return "\n".join(rows)


def _parse_value(text: str):
    """A command-line value the way Hydra reads it: ``384``, ``[1,1,1]``, ``true``, ``dw_bn``."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--table2"]:
        from pathlib import Path

        out = Path(argv[1] if len(argv) > 1 else "experiments/reports/table2.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        text = table2_markdown()
        out.write_text(text)
        print(text)
        print(f"wrote {out}")
        return 0
    # Hydra-style arguments: model=NAME, image_size=N, model.ARG=VALUE (a preset override).
    name, image_size, overrides = "cvt13", None, {}
    try:
        for arg in argv:
            key, sep, text = arg.partition("=")
            if not sep or not (key in ("model", "image_size") or key.startswith("model.")):
                raise ValueError(f"unexpected argument {arg!r}; use model=NAME, image_size=N, model.ARG=VALUE "
                                 "or --table2 [PATH]")
            value = _parse_value(text)
            if key == "model":
                name = str(value)
            elif key == "image_size":
                image_size = int(value)
            else:
                overrides[key.removeprefix("model.")] = value
        c = count_preset(name, image_size, **overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{name}: {c}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
