"""The lever that was tried and dropped: BatchNorm folded into the depthwise convolution of every ``dw_bn``
projection for inference. Measures CvT-13 inference with and without folding (interleaved, medians), in
fp32 and bf16 autocast, and the fp32 logit difference.

    python -m benchmarks.bn_folding [--batch 16] [--iters 9] [--out experiments/bench/bn_folding.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.cvt_bench.harness import Timing, batch, infer_fn, interleaved
from benchmarks.cvt_bench.models import randomize_norms
from cvt_lab import create_model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``dw_bn`` projections are one biased convolution: w * s, b - mean * s,
    with s = gamma / sqrt(var + eps) (exact in eval mode)."""
    folded = copy.deepcopy(model)
    for mod in folded.modules():
        if isinstance(mod, nn.Sequential) and isinstance(getattr(mod, "bn", None), nn.BatchNorm2d):
            conv, bn = mod.conv, mod.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              groups=conv.groups, bias=True)
            with torch.no_grad():
                fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                fused.bias.copy_(bn.bias - bn.running_mean * scale)
            mod.conv, mod.bn = fused, nn.Identity()
    return folded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cvt13")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/bn_folding.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    plain = randomize_norms(create_model(args.model, num_classes=1000)).eval()
    folded = fold_batchnorm(plain)
    x, _ = batch(args.batch, plain.img_size, 1000, "cpu")
    with torch.inference_mode():
        diff = (plain(x) - folded(x)).abs().max().item()
    report = {"model": args.model, "batch": args.batch, "threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "max_abs_logit_diff_fp32": diff}
    for precision in ("fp32", "bf16"):
        fns = {"plain": infer_fn(plain, x, "cpu", precision), "folded": infer_fn(folded, x, "cpu", precision)}
        t = interleaved(fns, Timing(args.iters, 2), "cpu")
        p, f = statistics.median(t["plain"]), statistics.median(t["folded"])
        report[precision] = {"ms_plain": 1e3 * p, "ms_folded": 1e3 * f, "speedup": p / f}
        print(f"{precision}: plain {1e3 * p:.0f} ms, folded {1e3 * f:.0f} ms per batch of {args.batch}: x{p / f:.3f}")
    print(f"fp32 max |logit diff| {diff:.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
