"""The measured sections of the report: throughput side by side (eager and compiled), time per image by
resolution, fp32 numerics, the speed levers one by one, and the subprocess figures (allocator, compile)."""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch

from .harness import (PRECISIONS, Timing, batch, infer_fn, interleaved, make_optimizer, ratio, set_malloc,
                      summarize, sync, train_step_fn)
from .models import COMPILED, Pair, macs, randomize_norms

MODES = ("train", "infer")


def bench_throughput(pair: Pair, device: str, batch_size: int, precision: str, image_size: int, timing: Timing,
                     modes: tuple[str, ...] = MODES) -> dict:
    """Images/s of every model of ``pair``, timed interleaved, per mode (training step / inference)."""
    x, y = batch(batch_size, image_size, pair.args["num_classes"], device)
    res: dict[str, dict] = {n: {} for n in pair.models}
    if "train" in modes:
        fns = {n: train_step_fn(m, make_optimizer(m, device), x, y, device, precision) for n, m in pair.models.items()}
        for n, t in interleaved(fns, timing, device).items():
            res[n]["train"] = summarize(t, batch_size)
        del fns  # and with them the optimizers' state
        for m in pair.models.values():
            m.zero_grad(set_to_none=True)  # gradients would only add to the next figure's memory
    if "infer" in modes:
        fns = {n: infer_fn(m, x, device, precision) for n, m in pair.models.items()}
        for n, t in interleaved(fns, timing, device).items():
            res[n]["infer"] = summarize(t, batch_size)
    return res


def add_flops(entry: dict, macs_per_image: int, peak_gflops: float | None) -> None:
    """Achieved GFLOP/s (2 FLOPs per MAC; a training step counts 3x the forward) and MFU, in place."""
    for mode, factor in (("train", 3), ("infer", 1)):
        if mode in entry:
            gflops = 2 * factor * macs_per_image * entry[mode]["images_per_s"] / 1e9
            entry[mode]["gflops"] = gflops
            entry[mode]["mfu"] = ratio(gflops, peak_gflops)


def ratios(res: dict, keys: tuple[str, ...] = ("images_per_s", "gflops", "ms_per_image"), num: str = "ours",
           den: str = "theirs") -> dict:
    """``num`` over ``den`` for each figure in ``keys``, per mode both have."""
    out = {}
    for mode in MODES:
        if mode in res.get(num, {}) and mode in res.get(den, {}):
            out[mode] = {k: ratio(res[num][mode].get(k), res[den][mode].get(k)) for k in keys if k in res[num][mode]}
    return out


def compare(res: dict) -> None:
    """The ratios stored beside the figures, in place: ours / theirs; with compiled twins also compiled /
    compiled, and our faster form (``best_ours``) over theirs eager and over theirs compiled."""
    res["ratio"] = ratios(res)
    if "ours" + COMPILED not in res:
        return
    res["ratio_compiled"] = ratios(res, num="ours" + COMPILED, den="theirs" + COMPILED)
    modes = [m for m in MODES if m in res["ours"] and m in res["ours" + COMPILED]]
    res["best_ours"] = {m: max(("ours", "ours" + COMPILED), key=lambda n: res[n][m]["images_per_s"]) for m in modes}
    for theirs in ("theirs", "theirs" + COMPILED):
        if theirs in res:
            res[f"ratio_best_vs_{theirs}"] = {m: ratio(res[res["best_ours"][m]][m]["images_per_s"],
                                                       res[theirs][m]["images_per_s"]) for m in modes}


def warm_compiled(pair: Pair, device: str, batch_size: int, precision: str, image_size: int,
                  modes: tuple[str, ...] = MODES) -> dict:
    """Compile every compiled twin for this batch, size, precision and mode before the timing (its first
    call), recording the seconds that took. A twin whose compilation fails is dropped from ``pair`` with the
    error recorded, so the other figures are still measured."""
    out: dict[str, dict] = {}
    x, y = batch(batch_size, image_size, pair.args["num_classes"], device)
    for name in [n for n in pair.models if n.endswith(COMPILED)]:
        model, out[name] = pair.models[name], {}
        for mode in modes:
            fn = (train_step_fn(model, make_optimizer(model, device), x, y, device, precision) if mode == "train"
                  else infer_fn(model, x, device, precision))
            t0 = time.perf_counter()
            try:
                fn()
                sync(device)
            except Exception as e:  # noqa: BLE001 - any compiler failure on this machine: report it, go on
                del pair.models[name]
                out[name] = {"error": f"{type(e).__name__}: {str(e)[:1000]}"}
                break
            out[name][f"{mode}_compile_s"] = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
    return out


def side_by_side(pair: Pair, device: str, batch_size: int, precision: str, image_size: int, timing: Timing,
                 peak_gflops: float | None, modes: tuple[str, ...] = MODES) -> dict:
    """Throughput of every model with its GFLOP/s, MFU and the ratios between the models (compiled twins
    are compiled first, and the time that took is kept under ``compile``)."""
    compiled = warm_compiled(pair, device, batch_size, precision, image_size, modes)
    res = bench_throughput(pair, device, batch_size, precision, image_size, timing, modes)
    if compiled:
        res["compile"] = compiled
    for name in pair.models:
        add_flops(res[name], macs(pair.eager(name), image_size), peak_gflops)
    compare(res)
    if device == "cuda":
        torch.cuda.empty_cache()  # the next block's shapes differ: start it from an unfragmented cache
    return res


def bf16_over_fp32(tp: dict, whose: str) -> dict[str, float | None]:
    """Ours in bf16 over ``whose`` fp32 figure, images/s, per mode (``tp``: precision -> throughput results)."""
    return {m: ratio(tp["bf16"]["ours"][m]["images_per_s"], tp["fp32"][whose][m]["images_per_s"]) for m in MODES}


def bench_resolution(pair: Pair, device: str, batch_size: int, precision: str, sizes: list[int],
                     timing: Timing) -> dict:
    """Time per image of both models at each of ``sizes``, beside the growth of the counted MACs."""
    out: dict[str, Any] = {"precision": precision, "batch": batch_size, "sizes": list(sizes),
                           "ours": {}, "theirs": {}, "ratio": {}, "macs_per_image": {}}
    for size in sizes:
        res = bench_throughput(pair, device, batch_size, precision, size, timing)
        out["macs_per_image"][str(size)] = macs(pair.models["ours"], size)
        for n in ("ours", "theirs"):
            out[n][str(size)] = {m: {"ms_per_image": r["ms_per_image"], "images_per_s": r["images_per_s"],
                                     "samples_ms": r["samples_ms"]} for m, r in res[n].items()}
        out["ratio"][str(size)] = {m: {"ms_per_image": ratio(res["ours"][m]["ms_per_image"],
                                                             res["theirs"][m]["ms_per_image"])} for m in res["ours"]}
    base = str(sizes[0])
    out["growth_vs_smallest"] = {
        n: {s: {m: ratio(out[n][s][m]["ms_per_image"], out[n][base][m]["ms_per_image"]) for m in out[n][s]}
            for s in out[n]} for n in ("ours", "theirs")}
    out["growth_vs_smallest"]["macs"] = {s: ratio(v, out["macs_per_image"][base])
                                         for s, v in out["macs_per_image"].items()}
    return out


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """No TF32 in CUDA matmuls or cuDNN convolutions inside, so an fp32 comparison compares fp32 arithmetic
    (cuDNN allows TF32 by default; the CPU has none)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def numerics(args: dict[str, Any], image_size: int, device: str, tolerance: float = 1e-4) -> dict:
    """fp32 logits of the optimized path (every speed lever on) against the plain formulation (all off),
    eval mode, on a model whose BatchNorm statistics are not trivial."""
    from cvt_lab.models.cvt import CvT, fast_paths

    torch.manual_seed(0)
    model = randomize_norms(CvT(**args)).to(device).eval()
    x, _ = batch(2, image_size, args["num_classes"], device, seed=1)
    with torch.no_grad(), exact_fp32():
        fast = model(x)
        with fast_paths(model, False):
            plain = model(x)
    diff = (fast - plain).abs().max().item()
    return {"max_abs_diff_fp32": diff, "max_abs_logit": plain.abs().max().item(), "tolerance": tolerance,
            "ok": diff <= tolerance}


# Where each lever of cvt_lab.models.cvt.FAST_PATHS acts on a CPU (precisions, modes); a lever not listed is
# measured everywhere. On CUDA every lever but the CPU-only ones is measured in every precision and mode.
CPU_LEVER_SCOPE = {
    "silu_mlp": (PRECISIONS, MODES),
    "fused_attention": (("fp32",), MODES),  # bf16 on CPU takes lowp_cpu_attention's path instead
    "lowp_cpu_attention": (("bf16",), MODES),
    "zero_copy_layout": (("fp32",), MODES),
    "fp32_strided_dwconv": (("bf16",), ("train",)),
}
CPU_ONLY_LEVERS = ("lowp_cpu_attention", "fp32_strided_dwconv")


def lever_scope(lever: str, device: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if device == "cpu":
        return CPU_LEVER_SCOPE.get(lever, (PRECISIONS, MODES))
    return ((), ()) if lever in CPU_ONLY_LEVERS else (PRECISIONS, MODES)


def bench_levers(pair: Pair, device: str, batch_size: int, image_size: int, precisions: list[str],
                 timing: Timing) -> dict:
    """Ours (eager) with every lever on against ours with one lever off, interleaved in one loop per lever."""
    from cvt_lab.models.cvt import FAST_PATHS, fast_paths

    model = pair.models["ours"]
    x, y = batch(batch_size, image_size, pair.args["num_classes"], device)
    out = {}
    for lever in FAST_PATHS:
        lever_precisions, modes = lever_scope(lever, device)
        for precision in (p for p in lever_precisions if p in precisions):
            for mode in modes:
                opt = make_optimizer(model, device)
                base = (train_step_fn(model, opt, x, y, device, precision) if mode == "train"
                        else infer_fn(model, x, device, precision))

                def without(base=base, lever=lever):
                    with fast_paths(model, **{lever: False}):
                        base()

                t = interleaved({"on": base, "off": without}, timing, device)
                on, off = statistics.median(t["on"]), statistics.median(t["off"])
                out[f"{lever}/{precision}/{mode}"] = {
                    "lever": lever, "precision": precision, "mode": mode, "ms_per_step_on": 1e3 * on,
                    "ms_per_step_off": 1e3 * off, "speedup": off / on,
                    "samples_on_ms": [round(1e3 * s, 2) for s in t["on"]],
                    "samples_off_ms": [round(1e3 * s, 2) for s in t["off"]]}
                del opt
                model.zero_grad(set_to_none=True)
    return out


def child_timing(opts) -> Timing:
    return Timing(opts.iters, opts.warmup, opts.clock)


def throughput_child(opts) -> dict:
    """fp32 throughput of both models in a fresh process under ``--malloc`` (the allocator lever)."""
    applied = set_malloc(opts.malloc)
    torch.set_num_threads(opts.threads)
    pair = Pair(json.loads(opts.model_args), "cpu")
    res = bench_throughput(pair, "cpu", opts.batch, opts.child_precision, opts.image_size, child_timing(opts))
    return {"malloc": opts.malloc, "applied": applied, "ours": res["ours"], "theirs": res["theirs"],
            "ratio": ratios(res, ("images_per_s",))}


def compile_child(opts) -> dict:
    """Ours eager against a compiled twin (``nn.Module.compile``, as ``model.compile=true`` does): compile
    time, then throughput, in a fresh process (an empty inductor cache is the caller's choice)."""
    from cvt_lab.models.cvt import CvT

    set_malloc(opts.malloc)
    torch.set_num_threads(opts.threads)
    args = json.loads(opts.model_args)
    torch.manual_seed(0)
    dev = opts.device
    eager = CvT(**args).to(dev)
    compiled = copy.deepcopy(eager)
    compiled.compile()
    x, y = batch(opts.batch, opts.image_size, args["num_classes"], dev)
    out: dict[str, Any] = {}
    for precision in opts.child_precision.split(","):  # autocast is part of the traced graph: one compile each
        res = out[precision] = {}
        for mode in MODES:
            fns = {name: (train_step_fn(m, make_optimizer(m, dev), x, y, dev, precision) if mode == "train"
                          else infer_fn(m, x, dev, precision))
                   for name, m in (("eager", eager), ("compiled", compiled))}
            t0 = time.perf_counter()
            fns["compiled"]()
            sync(dev)
            res[f"{mode}_compile_s"] = time.perf_counter() - t0
            t = interleaved(fns, child_timing(opts), dev)
            res[mode] = {k: summarize(v, opts.batch) for k, v in t.items()}
            res[mode]["speedup"] = ratio(res[mode]["compiled"]["images_per_s"], res[mode]["eager"]["images_per_s"])
    return out
