"""torch.compile of every preset on this machine's torch and device: graph breaks, graphs, recompiles, compile time.

    python -m benchmarks.compile_check --device cuda --out compile_check.json          # inductor, bf16 autocast
    python -m benchmarks.compile_check --backend eager --presets cvt_tiny --sizes 32   # what dynamo decides, fast

Per preset and image size: the model (drop path as in the preset, so training draws masks) is compiled in
place and driven through ``ImageClassifier`` as training does, a training and an evaluation step, then both
again under ``error_on_recompile`` and once more with a smaller batch (an epoch's last batch). Dynamo's own
counters give the graph breaks and the graphs; the goal is zero breaks and two graphs (training, evaluation)
whatever the batch. tests/unit/test_compile.py checks the same on CPU with the eager backend.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from cvt_lab.config import RecipeConfig
from cvt_lab.models import create_model, list_models
from cvt_lab.module import ImageClassifier


def steps(module: ImageClassifier, x: torch.Tensor, device: str, bf16: bool) -> None:
    autocast = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    module.train()
    with autocast:
        loss = module(x).float().square().mean()
    loss.backward()
    module.eval()
    with torch.no_grad(), autocast:
        module(x)
    if device == "cuda":
        torch.cuda.synchronize()


def check(preset: str, size: int, batch: int, device: str, backend: str, bf16: bool) -> dict:
    torch._dynamo.reset()
    counters.clear()
    model = create_model(preset, num_classes=1000, img_size=size).to(device)
    model.compile(backend=backend)
    module = ImageClassifier(model, RecipeConfig(), num_classes=1000)
    x = torch.randn(batch, 3, size, size, device=device)
    t0 = time.perf_counter()
    steps(module, x, device, bf16)
    first_s = time.perf_counter() - t0
    result = {"preset": preset, "size": size, "batch": batch, "first_step_s": round(first_s, 1)}
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            steps(module, x, device, bf16)
            steps(module, x[: max(batch // 2, 2)], device, bf16)
        result["recompiled"] = False
    except Exception as e:  # noqa: BLE001 - a recompile (or a failure) is the finding, reported per preset
        result["recompiled"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    result["graph_breaks"] = dict(counters["graph_break"])
    result["graphs"] = counters["stats"]["unique_graphs"]
    result["clean"] = not result["graph_breaks"] and result["recompiled"] is False and result["graphs"] == 2
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="inductor", help="inductor (what training uses), aot_eager or eager")
    parser.add_argument("--presets", nargs="+", default=[p for p in list_models() if p != "cvt_tiny"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 384])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args(argv)
    if opts.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch finds no CUDA GPU here; use --device cpu", file=sys.stderr)
        return 2
    results = []
    for preset in opts.presets:
        for size in opts.sizes:
            r = check(preset, size, opts.batch, opts.device, opts.backend, bf16=not opts.fp32)
            results.append(r)
            print(f"{preset:>8} @ {size}: graph breaks {sum(r['graph_breaks'].values())}, graphs {r['graphs']}, "
                  f"recompiled {r['recompiled']}, first step {r['first_step_s']} s", flush=True)
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if opts.device == "cuda" else
              opts.device, "backend": opts.backend, "bf16": not opts.fp32, "results": results,
              "all_clean": all(r["clean"] for r in results)}
    if opts.out:
        opts.out.write_text(json.dumps(report, indent=1) + "\n")
    print("all clean" if report["all_clean"] else "NOT clean: see graph breaks / recompiles above")
    return 0 if report["all_clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
