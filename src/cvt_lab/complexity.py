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


def table2_markdown(claims=None) -> str:
    """Our counts beside the paper's size claims (Table 2, and the rows of Tables 3 and 7 it prints params
    or GMACs for: ``experiments/paper_tables.yaml``)."""
    from cvt_lab.report.paper import complexity_claims, count_paper_config

    rows = [
        "# Complexity: the paper's numbers beside ours",
        "",
        "Made by `make table2` (`python -m cvt_lab.complexity --table2 ...`): parameters and multiply-adds",
        "counted from the model definition (`cvt_lab.complexity.count`, attention matmuls included), at the",
        "paper's configuration of each row; the paper's numbers are those of `experiments/paper_tables.yaml`",
        "(docs/paper.md).",
        "",
        "| model | size | params (paper) | params (ours) | diff | GMACs (paper) | GMACs (ours) | diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for claim in complexity_claims() if claims is None else claims:
        ours_p, ours_m = count_paper_config(claim.config)
        rows.append(f"| {claim.label} | {claim.config.size} | {claim.params:.2f}M | {ours_p:.3f}M | "
                    f"{100 * (ours_p / claim.params - 1):+.2f}% | {claim.gmacs:.2f} | {ours_m:.3f} | "
                    f"{100 * (ours_m / claim.gmacs - 1):+.2f}% |")
    rows += ["", "Tables 3, 5 and 7 print params rounded to whole millions (20M, 32M, 277M); the diff there is "
             "against that rounding.", ""]
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
