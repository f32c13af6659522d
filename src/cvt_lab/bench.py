"""Performance benchmark: cvt_lab's CvT beside transformers' ``CvtForImageClassification``, in one process.

    python -m cvt_lab.bench [--out FILE] [--device cpu|cuda] [--batch 16] [--precision fp32|bf16|both] [--quick]
    make bench        # the full CPU run, writes experiments/bench/bench_cpu.json

Both models get the same batch, resolution, thread count, precision (autocast), optimizer (AdamW) and
random data; their timed iterations are interleaved (ours, theirs, theirs, ours, ...) so that load from
other processes hits both alike. Every figure is a median over timed iterations after warm-up, and every
"ours / theirs" ratio is computed from the figures stored beside it. Sections of the JSON:

- ``matmul_peak``: GFLOP/s of a large ``torch.mm`` in fp32 and bf16, measured in the same run: the
  denominator of MFU.
- ``throughput``: images/s of a training step (forward, backward, optimizer step) and of inference
  (eval, ``inference_mode``), per precision; achieved GFLOP/s from the counted MACs (training counts
  3x the forward) and its fraction of the matmul peak of that precision (MFU).
- ``memory``: peak training memory at ``--memory-batch``: the peak of live tensor bytes during a training
  step, from the allocator events of ``torch.profiler`` (CPU; independent of malloc caching), or
  ``torch.cuda.max_memory_allocated`` (CUDA); on CPU also the peak RSS growth of a fresh subprocess.
- ``resolution``: time per image at each ``--resolutions`` for both models (training and inference) and
  the counted MACs, to see how cost grows with the token count.
- ``levers``: each speed lever of ``cvt_lab.models.cvt.FAST_PATHS`` switched off alone (ours only),
  the glibc allocator setting (both models, in a subprocess) and ``torch.compile``.
- ``numerics``: fp32 logits of the optimized path against the plain formulation (all levers off).
- ``training_loop``: ``python -m cvt_lab`` for one epoch in a subprocess: start-up until the first step
  and the fraction of the training loop spent waiting for data.
- ``targets``: the issue's targets, each with the measured value and whether it is met.

GPU: ``python -m cvt_lab.bench --device cuda --precision both --batch 128`` (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PRECISIONS = ("fp32", "bf16")
NAMES = ("ours", "theirs")
MIB = 2**20


# ----------------------------------------------------------------------------------------------- process


def set_malloc(mode: str) -> bool:
    """``tuned``: glibc keeps freed memory for reuse instead of handing big blocks back to the OS (no mmap
    for large blocks, no trimming), so a training step does not page-fault its activations in afresh every
    step. Process-wide, so it helps every model in the process equally; ``default`` leaves malloc alone.
    Returns whether the setting took effect (glibc on Linux only)."""
    if mode == "default":
        return False
    if mode != "tuned":
        raise ValueError(f"bench: unknown --malloc {mode!r}; valid choices are 'default' and 'tuned'")
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**30))


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_matrix_features() -> dict[str, bool] | None:
    """Which bf16 / matrix instructions the CPU has (Linux): AMX tiles give bf16 GEMMs many times the fp32
    rate, AVX512_BF16 about twice; the bf16 figures and their ceilings depend on it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return {f: f in flags for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}
    return None


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(v, 2) for v in os.getloadavg()]
    return None


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(device: str, precision: str):
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


# ------------------------------------------------------------------------------------------------ models


def preset_args(name: str, **overrides: Any) -> dict[str, Any]:
    from cvt_lab.models.factory import FACTORY_KEYS, load_preset

    args = {k: v for k, v in load_preset(name).items() if k not in FACTORY_KEYS}
    args.update(overrides)
    return args


def hf_config(args: dict[str, Any], num_classes: int):
    """transformers' ``CvtConfig`` for the same architecture as our constructor ``args`` (for CvT-13 this
    equals ``CvtConfig()``'s defaults except the class count). transformers has no other activation than erf
    GELU, no position embedding and no per-stage projection other than its own names."""
    from transformers import CvtConfig

    n = len(args["depths"])
    method = {"dw_bn": "dw_bn", "avg": "avg", "linear": "linear"}
    return CvtConfig(
        num_labels=num_classes, num_channels=args["in_chans"], patch_sizes=list(args["embed_kernel"]),
        patch_stride=list(args["embed_stride"]), patch_padding=list(args["embed_padding"]),
        embed_dim=list(args["dims"]), num_heads=list(args["heads"]), depth=list(args["depths"]),
        mlp_ratio=list(args["mlp_ratio"]), attention_drop_rate=[args["attn_drop_rate"]] * n,
        drop_rate=[args["drop_rate"]] * n, drop_path_rate=list(args["drop_path"]), qkv_bias=list(args["qkv_bias"]),
        cls_token=list(args["cls_token"]), qkv_projection_method=[method[p] for p in args["proj"]],
        kernel_qkv=list(args["proj_kernel"]), padding_kv=[k // 2 for k in args["proj_kernel"]],
        stride_kv=list(args["kv_stride"]), padding_q=[k // 2 for k in args["proj_kernel"]],
        stride_q=list(args["q_stride"]),
    )


class Pair:
    """Our model and transformers' on one device, with a uniform forward returning logits."""

    def __init__(self, args: dict[str, Any], device: str, seed: int = 0):
        try:
            from transformers import CvtForImageClassification
        except ImportError as e:  # pragma: no cover - transformers is in the [test] extra that make installs
            raise SystemExit("bench: transformers is needed for the comparison: pip install -e '.[test]'") from e
        from cvt_lab.models.cvt import CvT

        torch.manual_seed(seed)
        self.args = args
        self.models: dict[str, nn.Module] = {
            "ours": CvT(**args).to(device),
            "theirs": CvtForImageClassification(hf_config(args, args["num_classes"])).to(device),
        }

    @staticmethod
    def forward(name: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x) if name == "ours" else model(pixel_values=x).logits

    def params(self) -> dict[str, int]:
        return {k: sum(p.numel() for p in m.parameters()) for k, m in self.models.items()}


def make_optimizer(model: nn.Module, device: str) -> torch.optim.Optimizer:
    """The same AdamW for both models: the fused kernel where PyTorch has one for the device."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - older PyTorch / device without a fused AdamW
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)


def batch(size: int, image_size: int, num_classes: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 3, image_size, image_size, generator=g).to(device)
    y = torch.randint(0, num_classes, (size,), generator=g).to(device)
    return x, y


def train_step_fn(name: str, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  device: str, precision: str) -> Callable[[], None]:
    def step() -> None:
        model.train()
        with autocast(device, precision):
            loss = F.cross_entropy(Pair.forward(name, model, x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def infer_fn(name: str, model: nn.Module, x: torch.Tensor, device: str, precision: str) -> Callable[[], None]:
    def run() -> None:
        model.eval()
        with torch.inference_mode(), autocast(device, precision):
            Pair.forward(name, model, x)

    return run


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = {"now": time.perf_counter}


@contextlib.contextmanager
def measuring(threads: int, clock: str) -> Iterator[None]:
    """Temporarily time with ``threads`` intra-op threads and ``clock`` (see --clock)."""
    saved = torch.get_num_threads(), CLOCK["now"]
    torch.set_num_threads(threads)
    CLOCK["now"] = CLOCKS[clock]
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        CLOCK["now"] = saved[1]


def interleaved(fns: dict[str, Callable[[], None]], iters: int, warmup: int, device: str) -> dict[str, list[float]]:
    """Seconds per call of each function; rounds alternate the order so drift and load hit all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys, now = list(fns), CLOCK["now"]
    for i in range(warmup + iters):
        for k in keys if i % 2 == 0 else keys[::-1]:
            sync(device)
            t0 = now()
            fns[k]()
            sync(device)
            if i >= warmup:
                times[k].append(now() - t0)
    return times


def summarize(samples: list[float], images: int) -> dict[str, Any]:
    med = statistics.median(samples)
    return {"images_per_s": images / med, "ms_per_step": 1e3 * med, "ms_per_image": 1e3 * med / images,
            "ms_min": 1e3 * min(samples), "samples_ms": [round(1e3 * s, 2) for s in samples]}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


# ------------------------------------------------------------------------------------------------ counts


def macs(model: nn.Module, image_size: int) -> int:
    """Counted multiply-adds of one image's forward pass (:func:`cvt_lab.complexity.count`, attention
    matmuls included); works for transformers' model too (it takes the images positionally)."""
    from cvt_lab.complexity import count

    return count(model, image_size, in_chans=3).macs


def matmul_peak(device: str, precision: str, n: int, iters: int) -> float:
    """GFLOP/s of an ``n x n`` by ``n x n`` matmul: the attainable matrix-multiply rate of this machine."""
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    times = interleaved({"mm": lambda: torch.mm(a, b, out=out)}, iters, 2, device)["mm"]
    return 2 * n**3 / statistics.median(times) / 1e9


# ------------------------------------------------------------------------------------------------ memory


def peak_tensor_bytes(step: Callable[[], None], live_before: int, device: str) -> int:
    """Peak bytes of live tensors during ``step``: ``live_before`` plus the highest running sum of the
    allocations minus frees that ``torch.profiler`` records (CPU), or of ``max_memory_allocated`` (CUDA)."""
    if device == "cuda":  # the same quantity: what the step allocates on top of what was live before it
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return live_before + torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    return live_before + max(itertools.accumulate((n for _, n in events), initial=0))


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop lines) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tensor_bytes(tensors: Iterator[torch.Tensor]) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        st = t.untyped_storage()
        if st.data_ptr() not in seen:
            seen.add(st.data_ptr())
            total += st.nbytes()
    return total


def live_training_bytes(model: nn.Module, opt: torch.optim.Optimizer, *inputs: torch.Tensor) -> int:
    state = (v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))
    grads = (p.grad for p in model.parameters())
    return tensor_bytes(itertools.chain(model.parameters(), model.buffers(), grads, state, inputs))


def memory_in_process(pair: Pair, batch_size: int, image_size: int, device: str, precision: str) -> dict:
    """Peak live tensor memory of a steady-state training step (after one step, so gradients and the
    optimizer state exist), per model."""
    out = {}
    x, y = batch(batch_size, image_size, pair.args["num_classes"], device)
    for name, model in pair.models.items():
        opt = make_optimizer(model, device)
        step = train_step_fn(name, model, opt, x, y, device, precision)
        step()  # creates the optimizer state; the measured step is the steady state
        opt.zero_grad(set_to_none=True)  # what the step does first, done outside the window: the profiler
        live = live_training_bytes(model, opt, x, y)  # sees no frees of blocks allocated before it started
        peak = peak_tensor_bytes(step, live, device)
        out[name] = {"peak_mib": peak / MIB, "live_before_step_mib": live / MIB}
        del opt, step
        model.zero_grad(set_to_none=True)  # free the gradients before the next model's window
    return out


def _proc_status_bytes(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` (peak RSS) of this process from /proc/self/status, in bytes (Linux)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def memory_child(opts: argparse.Namespace) -> dict:
    """Run in a fresh subprocess: build one model, then three training steps; report RSS before the first
    step and the peak RSS during the steps (``VmHWM``, reset just before them; not ``ru_maxrss``, which
    survives ``exec`` and so starts at the parent's RSS)."""
    set_malloc(opts.malloc)
    torch.set_num_threads(opts.threads)
    args = json.loads(opts.model_args)
    pair = Pair(args, "cpu")
    name = opts.child_name
    model = pair.models[name]
    x, y = batch(opts.memory_batch, opts.image_size, args["num_classes"], "cpu")
    opt = make_optimizer(model, "cpu")
    step = train_step_fn(name, model, opt, x, y, "cpu", opts.child_precision)
    rss0 = _proc_status_bytes("VmRSS")
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    for _ in range(3):
        step()
    peak = _proc_status_bytes("VmHWM")
    if rss0 is None or peak is None:
        return {"note": "no /proc/self/status: peak RSS not measured"}
    return {"rss_before_mib": rss0 / MIB, "peak_rss_mib": peak / MIB, "peak_rss_growth_mib": (peak - rss0) / MIB}


def child_cmd(opts: argparse.Namespace, model_args: dict, task: str, **extra: Any) -> list[str]:
    """``python -m cvt_lab.bench --_child TASK`` with this run's settings; ``extra`` overrides or adds flags."""
    flags = {"device": opts.device, "threads": opts.threads, "image_size": opts.image_size,
             "memory_batch": opts.memory_batch, "batch": opts.batch, "iters": opts.iters, "warmup": opts.warmup,
             "clock": opts.clock, **extra}
    cmd = [sys.executable, "-m", "cvt_lab.bench", "--_child", task, "--model-args", json.dumps(model_args)]
    for k, v in flags.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


def run_child(cmd: list[str], timeout: float = 3600, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"bench child failed ({' '.join(cmd[3:6])}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- sections


def bench_throughput(pair: Pair, opts: argparse.Namespace, precision: str, image_size: int, iters: int,
                     warmup: int, modes: tuple[str, ...] = ("train", "infer")) -> dict:
    dev = opts.device
    x, y = batch(opts.batch, image_size, pair.args["num_classes"], dev)
    res: dict[str, dict] = {n: {} for n in pair.models}
    if "train" in modes:
        opts_ = {n: make_optimizer(m, dev) for n, m in pair.models.items()}
        fns = {n: train_step_fn(n, m, opts_[n], x, y, dev, precision) for n, m in pair.models.items()}
        for n, t in interleaved(fns, iters, warmup, dev).items():
            res[n]["train"] = summarize(t, opts.batch)
        del opts_, fns
        for m in pair.models.values():
            m.zero_grad(set_to_none=True)  # gradients would only add to the next figure's memory
    if "infer" in modes:
        fns = {n: infer_fn(n, m, x, dev, precision) for n, m in pair.models.items()}
        for n, t in interleaved(fns, iters, warmup, dev).items():
            res[n]["infer"] = summarize(t, opts.batch)
    return res


def bf16_over_fp32(tp: dict, whose: str) -> dict[str, float | None]:
    """Ours in bf16 over ``whose`` fp32 figure, images/s, per mode (``tp``: precision -> throughput results)."""
    return {m: ratio(tp["bf16"]["ours"][m]["images_per_s"], tp["fp32"][whose][m]["images_per_s"])
            for m in ("train", "infer")}


def add_flops(entry: dict, macs_per_image: int, peak_gflops: float | None) -> None:
    """Achieved GFLOP/s (2 FLOPs per MAC; a training step counts 3x the forward) and MFU, in place."""
    for mode, factor in (("train", 3), ("infer", 1)):
        if mode in entry:
            gflops = 2 * factor * macs_per_image * entry[mode]["images_per_s"] / 1e9
            entry[mode]["gflops"] = gflops
            entry[mode]["mfu"] = ratio(gflops, peak_gflops)


def ratios(res: dict, keys: tuple[str, ...] = ("images_per_s", "gflops", "ms_per_image")) -> dict:
    out = {}
    for mode in ("train", "infer"):
        if mode in res.get("ours", {}) and mode in res.get("theirs", {}):
            out[mode] = {k: ratio(res["ours"][mode].get(k), res["theirs"][mode].get(k)) for k in keys
                         if k in res["ours"][mode]}
    return out


def bench_resolution(pair: Pair, opts: argparse.Namespace, precision: str, iters: int, warmup: int) -> dict:
    out: dict[str, Any] = {"precision": precision, "batch": opts.batch, "sizes": list(opts.resolutions),
                           "ours": {}, "theirs": {}, "ratio": {}, "macs_per_image": {}}
    for size in opts.resolutions:
        res = bench_throughput(pair, opts, precision, size, iters, warmup)
        out["macs_per_image"][str(size)] = macs(pair.models["ours"], size)
        for n in pair.models:
            out[n][str(size)] = {m: {"ms_per_image": r["ms_per_image"], "images_per_s": r["images_per_s"],
                                     "samples_ms": r["samples_ms"]} for m, r in res[n].items()}
        out["ratio"][str(size)] = {m: {"ms_per_image": ratio(res["ours"][m]["ms_per_image"],
                                                             res["theirs"][m]["ms_per_image"])} for m in res["ours"]}
    base = str(opts.resolutions[0])
    out["growth_vs_smallest"] = {
        n: {s: {m: ratio(out[n][s][m]["ms_per_image"], out[n][base][m]["ms_per_image"]) for m in out[n][s]}
            for s in out[n]} for n in NAMES}
    out["growth_vs_smallest"]["macs"] = {s: ratio(v, out["macs_per_image"][base])
                                         for s, v in out["macs_per_image"].items()}
    return out


def numerics(args: dict[str, Any], image_size: int, device: str) -> dict:
    """fp32 logits of the optimized path (eval: SiLU MLP, fused attention, zero-copy views) against
    the plain formulation (every lever off), on a model whose BatchNorm statistics are not trivial."""
    from cvt_lab.models.cvt import CvT, fast_paths

    torch.manual_seed(0)
    model = randomize_norms(CvT(**args)).to(device).eval()
    x, _ = batch(2, image_size, args["num_classes"], device, seed=1)
    with torch.no_grad():
        fast = model(x)
        with fast_paths(False):
            plain = model(x)
    diff = (fast - plain).abs().max().item()
    return {"max_abs_diff_fp32": diff, "max_abs_logit": plain.abs().max().item(), "tolerance": 1e-4,
            "ok": diff <= 1e-4}


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
    return model


# Each lever of FAST_PATHS, and the precisions / modes where it acts.
LEVER_SCOPE = {
    "silu_mlp": (("fp32", "bf16"), ("train", "infer")),
    "fused_attention": (("fp32",), ("train", "infer")),
    "lowp_cpu_attention": (("bf16",), ("train", "infer")),
    "zero_copy_layout": (("fp32",), ("train", "infer")),
    "fp32_strided_dwconv": (("bf16",), ("train",)),
}


def bench_levers(pair: Pair, opts: argparse.Namespace, iters: int, warmup: int) -> dict:
    """Ours with all levers on against ours with one lever off, interleaved in one loop per lever."""
    from cvt_lab.models.cvt import fast_paths

    dev, model = opts.device, pair.models["ours"]
    x, y = batch(opts.batch, opts.image_size, pair.args["num_classes"], dev)
    out = {}
    for lever, (precisions, modes) in LEVER_SCOPE.items():
        for precision in precisions:
            if precision not in opts.precisions or (dev != "cpu" and lever in ("lowp_cpu_attention",
                                                                              "fp32_strided_dwconv")):
                continue
            for mode in modes:
                opt = make_optimizer(model, dev)
                base = (train_step_fn("ours", model, opt, x, y, dev, precision) if mode == "train"
                        else infer_fn("ours", model, x, dev, precision))

                def without(base=base, lever=lever):
                    with fast_paths(**{lever: False}):
                        base()

                t = interleaved({"on": base, "off": without}, iters, warmup, dev)
                on, off = statistics.median(t["on"]), statistics.median(t["off"])
                out[f"{lever}/{precision}/{mode}"] = {
                    "lever": lever, "precision": precision, "mode": mode, "ms_per_step_on": 1e3 * on,
                    "ms_per_step_off": 1e3 * off, "speedup": off / on,
                    "samples_on_ms": [round(1e3 * s, 2) for s in t["on"]],
                    "samples_off_ms": [round(1e3 * s, 2) for s in t["off"]]}
                del opt
                model.zero_grad(set_to_none=True)
    return out


def throughput_child(opts: argparse.Namespace) -> dict:
    """fp32 throughput of both models in a fresh process under ``--malloc`` (the allocator lever)."""
    applied = set_malloc(opts.malloc)
    torch.set_num_threads(opts.threads)
    pair = Pair(json.loads(opts.model_args), "cpu")
    opts.device = "cpu"
    res = bench_throughput(pair, opts, opts.child_precision, opts.image_size, opts.iters, opts.warmup)
    return {"malloc": opts.malloc, "applied": applied, "ours": res["ours"], "theirs": res["theirs"],
            "ratio": ratios(res, ("images_per_s",))}


def compile_child(opts: argparse.Namespace) -> dict:
    """Ours eager against ours under ``torch.compile`` (``model.compile=true``): compile time, then
    throughput, in a fresh process."""
    from cvt_lab.models.cvt import CvT

    set_malloc(opts.malloc)
    torch.set_num_threads(opts.threads)
    args = json.loads(opts.model_args)
    torch.manual_seed(0)
    dev = opts.device
    eager = CvT(**args).to(dev)
    compiled = torch.compile(eager)
    x, y = batch(opts.batch, opts.image_size, args["num_classes"], dev)
    out: dict[str, Any] = {}
    for precision in opts.child_precision.split(","):  # autocast is part of the traced graph: one compile each
        res = out[precision] = {}
        for mode in ("train", "infer"):
            fns = {}
            for name, m in (("eager", eager), ("compiled", compiled)):
                if mode == "train":
                    fns[name] = train_step_fn("ours", m, make_optimizer(eager, dev), x, y, dev, precision)
                else:
                    fns[name] = infer_fn("ours", m, x, dev, precision)
            t0 = time.perf_counter()
            fns["compiled"]()
            sync(dev)
            res[f"{mode}_compile_s"] = time.perf_counter() - t0
            t = interleaved(fns, opts.iters, opts.warmup, dev)
            res[mode] = {k: summarize(v, opts.batch) for k, v in t.items()}
            res[mode]["speedup"] = ratio(res[mode]["compiled"]["images_per_s"], res[mode]["eager"]["images_per_s"])
    return out


# --------------------------------------------------------------------------------- the training loop

# Runs ``python -m cvt_lab`` with a Lightning callback added to the Trainer (through a patch of
# ``Trainer.__init__`` in this wrapper only) and a timer around every DataLoader ``next``: start-up is the
# time from launching the process to the first training step, data wait the time spent fetching training
# batches, step time the time from a step's start to its end (forward, backward, optimizer, logging hooks),
# validation and test the time inside those loops (data included).
_CLI_WRAPPER = r"""
import json, os, sys, time, runpy
LAUNCH = float(os.environ["CVT_BENCH_LAUNCH"]); OUT = os.environ["CVT_BENCH_TIMINGS"]
import lightning.pytorch as pl
import torch.utils.data.dataloader as dl
stats = {"first_step_s": None, "steps": 0, "step_s": 0.0, "data_s": 0.0, "gap_s": 0.0, "epochs": 0,
         "validation_s": 0.0, "test_s": 0.0}
state = {"training": False, "t0": None, "last_end": None, "v0": None, "t_test": None}
_next = dl._BaseDataLoaderIter.__next__
def timed_next(self):
    t = time.perf_counter()
    try:
        return _next(self)
    finally:
        if state["training"]:
            stats["data_s"] += time.perf_counter() - t
dl._BaseDataLoaderIter.__next__ = timed_next
class Timer(pl.Callback):
    def on_train_epoch_start(self, *a):
        state["training"] = True; state["last_end"] = None; stats["epochs"] += 1
    def on_validation_start(self, *a):
        state["training"] = False; state["v0"] = time.perf_counter()
    def on_validation_end(self, *a):
        state["training"] = True; stats["validation_s"] += time.perf_counter() - state["v0"]
    def on_test_start(self, *a): state["t_test"] = time.perf_counter()
    def on_test_end(self, *a):
        stats["test_s"] += time.perf_counter() - state["t_test"]
        with open(OUT, "w") as f: json.dump(stats, f)
    def on_train_epoch_end(self, *a): state["training"] = False
    def on_train_batch_start(self, *a):
        now = time.perf_counter()
        if stats["first_step_s"] is None:
            stats["first_step_s"] = time.time() - LAUNCH
        if state["last_end"] is not None:
            stats["gap_s"] += now - state["last_end"]
        state["t0"] = now
    def on_train_batch_end(self, *a):
        now = time.perf_counter(); stats["steps"] += 1; stats["step_s"] += now - state["t0"]; state["last_end"] = now
    def on_fit_end(self, *a):
        with open(OUT, "w") as f: json.dump(stats, f)
_init = pl.Trainer.__init__
def init(self, *args, callbacks=None, **kw):
    _init(self, *args, callbacks=[*(callbacks or []), Timer()], **kw)
pl.Trainer.__init__ = init
sys.argv = ["cvt_lab", *sys.argv[1:]]
runpy.run_module("cvt_lab", run_name="__main__")
"""


def cli_available() -> tuple[bool, str]:
    try:
        proc = subprocess.run([sys.executable, "-m", "cvt_lab", "--help"], capture_output=True, text=True,
                              timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"CLI not available: {e}"
    if proc.returncode != 0:
        return False, f"CLI not available: `python -m cvt_lab --help` exited {proc.returncode}: " \
                      f"{(proc.stderr or proc.stdout).strip()[-300:]}"
    return True, ""


def bench_training_loop(overrides: list[str], threads: int, timeout: float = 1800) -> dict:
    """One ``python -m cvt_lab`` run (e.g. the default digits run for one epoch): start-up, data wait."""
    ok, note = cli_available()
    if not ok:
        return {"available": False, "note": note, "overrides": overrides}
    with tempfile.TemporaryDirectory() as tmp:
        timings = Path(tmp) / "timings.json"
        cmd = [sys.executable, "-c", _CLI_WRAPPER, *overrides, f"hydra.run.dir={tmp}/run",
               "trainer.enable_progress_bar=false"]
        env = {**os.environ, "CVT_BENCH_TIMINGS": str(timings), "OMP_NUM_THREADS": str(threads),
               "PYTHONWARNINGS": "ignore"}
        env["CVT_BENCH_LAUNCH"] = repr(time.time())
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not timings.is_file():
            return {"available": False, "overrides": overrides,
                    "note": f"the run failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}"}
        stats = json.loads(timings.read_text())
        results_file = Path(tmp) / "run" / "results.json"
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    loop = stats["step_s"] + stats["data_s"]
    accounted = (stats["first_step_s"] or 0) + stats["step_s"] + stats["gap_s"] + stats["validation_s"] + stats["test_s"]
    return {
        "available": True, "overrides": overrides, "wall_s": wall, "startup_s": stats["first_step_s"],
        "fraction_of_wall": {"startup": ratio(stats["first_step_s"], wall), "train_steps": ratio(stats["step_s"], wall),
                             "between_steps_incl_data": ratio(stats["gap_s"], wall),
                             "validation": ratio(stats["validation_s"], wall), "test": ratio(stats["test_s"], wall),
                             "rest": ratio(wall - accounted, wall)},
        "validation_s": stats["validation_s"], "test_s": stats["test_s"],
        "steps": stats["steps"],
        "epochs": stats["epochs"], "step_s": stats["step_s"], "data_wait_s": stats["data_s"],
        "data_wait_fraction": ratio(stats["data_s"], loop),
        "between_steps_s": stats["gap_s"],
        "between_steps_fraction": ratio(stats["gap_s"], stats["step_s"] + stats["gap_s"]),
        "ms_per_step": ratio(1e3 * stats["step_s"], stats["steps"]),
        "results_startup_s": results.get("startup_s"), "test_acc1": results.get("test/acc1"),
        "precision": results.get("precision"),
    }


def bench_digits_accuracy(threads: int) -> dict:
    """The default digits run (``python -m cvt_lab``, every epoch) in fp32 and with bf16 autocast: does bf16
    reach the same test accuracy, and how much faster is its step?"""
    runs = {p: bench_training_loop([f"trainer.precision={flag}"], threads)
            for p, flag in (("fp32", "32-true"), ("bf16", "bf16-mixed"))}
    out: dict[str, Any] = {"runs": runs}
    if all(r.get("available") and r.get("test_acc1") is not None for r in runs.values()):
        out["test_acc1"] = {p: r["test_acc1"] for p, r in runs.items()}
        out["bf16_minus_fp32_points"] = 100 * (runs["bf16"]["test_acc1"] - runs["fp32"]["test_acc1"])
        out["step_speedup_bf16"] = ratio(runs["fp32"]["ms_per_step"], runs["bf16"]["ms_per_step"])
    return out


# ---------------------------------------------------------------------------------------------- targets


def check_targets(report: dict) -> list[dict]:
    tp = report.get("throughput", {})
    out = []

    peak = report.get("matmul_peak_gflops", {})

    def add(name: str, value: float | None, target: float, higher: bool = True, note: str = "",
            ceiling: float | None = None) -> None:
        met = None if value is None else (value >= target if higher else value <= target)
        row = {"target": name, "value": value, "threshold": target, "met": met}
        if ceiling is not None:
            row.update(ceiling=ceiling, reachable=ceiling >= target)
        out.append({**row, **({"note": note} if note else {})})

    def ceiling(precision: str, mode: str) -> float | None:
        """The speed-up over theirs (fp32) that ours would have if every counted FLOP ran at the matmul peak
        measured in this run: no implementation of the same model can beat it on this machine."""
        theirs = tp.get("fp32", {}).get("theirs", {}).get(mode, {}).get("gflops")
        return ratio(peak.get(precision), theirs)

    if "fp32" in tp:
        for mode, label in (("train", "training"), ("infer", "inference")):
            add(f"fp32 {label} throughput, ours / theirs >= 1.4", tp["fp32"]["ratio"][mode]["images_per_s"], 1.4,
                ceiling=ceiling("fp32", mode))
    if "bf16" in tp and "fp32" in tp:
        for mode, label, target in (("train", "training", 2.5), ("infer", "inference", 3.0)):
            add(f"bf16 {label} throughput, ours / theirs fp32 >= {target:g}",
                tp["bf16"]["ratio_vs_theirs_fp32"][mode], target, ceiling=ceiling("bf16", mode))
    mem = report.get("memory", {})
    if "ratio" in mem:
        add(f"peak training memory at batch {mem['batch']}, ours / theirs <= 1", mem["ratio"]["peak_mib"], 1.0,
            higher=False)
    acc = report.get("digits_accuracy", {})
    if "bf16_minus_fp32_points" in acc:
        add("default digits run, bf16 test top-1 - fp32 test top-1 >= -1 point", acc["bf16_minus_fp32_points"], -1.0)
    if "numerics" in report:
        add("fp32 logits, max |optimized - plain| <= 1e-4", report["numerics"]["max_abs_diff_fp32"], 1e-4,
            higher=False)
    return out


# ------------------------------------------------------------------------------------------------- output


def fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(report: dict) -> str:
    lines = []
    m = report["meta"]
    lines.append(f"cvt_lab.bench: {report['config']['model']} vs transformers CvtForImageClassification | "
                 f"{m['device_name']} | {m['threads']} threads | batch {report['config']['batch']} | "
                 f"{report['config']['image_size']}px | malloc {m['malloc']} | load {m['load_average_start']}")
    feats = m.get("cpu_features") or {}
    if m.get("device") == "cpu" and feats:
        lines.append("bf16 matrix instructions: " + (", ".join(f for f in ("amx_bf16", "avx512_bf16") if feats.get(f))
                                                      or "none (bf16 runs through fp32 units)"))
    peak = report.get("matmul_peak_gflops", {})
    lines.append("matmul peak: " + ", ".join(f"{p} {fmt(v, '.1f')} GFLOP/s" for p, v in peak.items()))
    lines.append("")
    lines.append(f"{'figure':<34}{'ours':>12}{'theirs':>12}{'ours/theirs':>13}")
    for p, r in report.get("throughput", {}).items():
        for mode in ("train", "infer"):
            o, t = r["ours"].get(mode), r["theirs"].get(mode)
            if not o:
                continue
            lines.append(f"{p + ' ' + mode + ' images/s':<34}{fmt(o['images_per_s']):>12}"
                         f"{fmt(t['images_per_s']):>12}{fmt(r['ratio'][mode]['images_per_s']):>13}")
            lines.append(f"{p + ' ' + mode + ' GFLOP/s (MFU)':<34}"
                         f"{fmt(o['gflops'], '.1f') + ' (' + fmt(100 * (o['mfu'] or 0), '.0f') + '%)':>12}"
                         f"{fmt(t['gflops'], '.1f') + ' (' + fmt(100 * (t['mfu'] or 0), '.0f') + '%)':>12}"
                         f"{fmt(r['ratio'][mode]['gflops']):>13}")
        if "ratio_vs_theirs_fp32" in r:
            for mode, v in r["ratio_vs_theirs_fp32"].items():
                lines.append(f"{p + ' ' + mode + ' vs theirs fp32':<34}{'':>12}{'':>12}{fmt(v):>13}")
    st = report.get("throughput_steady")
    if st:
        parts = []
        for p in PRECISIONS:
            if p in st:
                parts.append(f"{p} train {fmt(st[p]['ratio']['train']['images_per_s'])}, infer "
                             f"{fmt(st[p]['ratio']['infer']['images_per_s'])}")
            if p == "bf16" and "ratio_vs_theirs_fp32" in st.get(p, {}):
                r = st[p]["ratio_vs_theirs_fp32"]
                parts.append(f"bf16 vs theirs fp32 train {fmt(r['train'])}, infer {fmt(r['infer'])}")
        lines.append(f"steady cross-check ({st['threads']} thread, {st['clock']} clock), ours/theirs: " + "; ".join(parts))
    mem = report.get("memory")
    if mem and "ours" in mem:
        lines.append(f"{'peak train memory MiB (b' + str(mem['batch']) + ')':<34}{fmt(mem['ours']['peak_mib'], '.0f'):>12}"
                     f"{fmt(mem['theirs']['peak_mib'], '.0f'):>12}{fmt(mem['ratio']['peak_mib']):>13}")
        if "peak_rss_growth_mib" in mem["ours"] and "peak_rss_growth_mib" in mem["theirs"]:
            lines.append(f"{'  peak RSS growth MiB':<34}{fmt(mem['ours']['peak_rss_growth_mib'], '.0f'):>12}"
                         f"{fmt(mem['theirs']['peak_rss_growth_mib'], '.0f'):>12}"
                         f"{fmt(mem['ratio'].get('peak_rss_growth_mib')):>13}")
    res = report.get("resolution")
    if res:
        lines.append("")
        lines.append(f"time per image ({res['precision']}, batch {res['batch']}), ms: train / infer;  MACs growth")
        for s in map(str, res["sizes"]):
            o, t = res["ours"][s], res["theirs"][s]
            lines.append(f"  {s:>4}px  ours {fmt(o['train']['ms_per_image'], '.1f')} / {fmt(o['infer']['ms_per_image'], '.1f')}"
                         f"   theirs {fmt(t['train']['ms_per_image'], '.1f')} / {fmt(t['infer']['ms_per_image'], '.1f')}"
                         f"   ratio {fmt(res['ratio'][s]['train']['ms_per_image'])} / {fmt(res['ratio'][s]['infer']['ms_per_image'])}"
                         f"   MACs x{fmt(res['growth_vs_smallest']['macs'][s])}")
    lev = report.get("levers", {})
    if lev:
        lines.append("")
        cfg = report.get("levers_config", {})
        lines.append(f"levers (ours, {cfg.get('threads', '?')} thread(s), {cfg.get('clock', '?')} clock; "
                     f"speed-up of having the lever on):")
        for k, v in lev.items():
            if isinstance(v, dict) and "lever" in v:
                lines.append(f"  {k:<34} {fmt(v['ms_per_step_off'], '.0f'):>8} -> {fmt(v['ms_per_step_on'], '.0f'):>6} ms"
                             f"  x{fmt(v['speedup'])}")
            elif isinstance(v, dict) and "note" in v and "speedup" not in v:
                lines.append(f"  {k:<34} {v['note']}")
        alloc = lev.get("malloc")
        if alloc and "speedup" in alloc:
            for n in NAMES:
                lines.append(f"  malloc {alloc['malloc']} ({n}, fp32){'':<14} train x{fmt(alloc['speedup'][n]['train'])}"
                             f"  infer x{fmt(alloc['speedup'][n]['infer'])}")
        for p, comp in lev.get("compile", {}).items():
            if isinstance(comp, dict) and "train" in comp:
                lines.append(f"  torch.compile (ours, {p}){'':<9} train x{fmt(comp['train']['speedup'])} (compile "
                             f"{fmt(comp['train_compile_s'], '.0f')} s), infer x{fmt(comp['infer']['speedup'])}")
    num = report.get("numerics")
    if num:
        lines.append("")
        lines.append(f"numerics: fp32 max |optimized - plain| = {num['max_abs_diff_fp32']:.2e} (<= 1e-4: {num['ok']})")
    tl = report.get("training_loop")
    if tl:
        lines.append("")
        if tl.get("available"):
            lines.append(f"training loop ({' '.join(tl['overrides'])}): start-up {fmt(tl['startup_s'], '.1f')} s, "
                         f"data wait {fmt(100 * (tl['data_wait_fraction'] or 0), '.1f')}% of the loop, "
                         f"{tl['steps']} steps at {fmt(tl['ms_per_step'], '.0f')} ms")
            fr = tl.get("fraction_of_wall")
            if fr:
                lines.append("  share of wall time: " + ", ".join(f"{k} {fmt(100 * (v or 0), '.0f')}%" for k, v in fr.items()))
        else:
            lines.append(f"training loop: skipped ({tl.get('note')})")
    acc = report.get("digits_accuracy")
    if acc and "test_acc1" in acc:
        lines.append(f"default digits run: test top-1 fp32 {100 * acc['test_acc1']['fp32']:.2f}%, bf16 "
                     f"{100 * acc['test_acc1']['bf16']:.2f}%; bf16 step x{fmt(acc['step_speedup_bf16'])} faster")
        full = acc.get("runs", {}).get("fp32", {})
        if full.get("fraction_of_wall"):  # the whole run, where start-up is amortized as in real use
            lines.append(f"  fp32 run: {fmt(full['wall_s'], '.1f')} s wall, start-up {fmt(full['startup_s'], '.1f')} s, "
                         f"data wait {fmt(100 * (full['data_wait_fraction'] or 0), '.1f')}% of the loop; share of "
                         "wall time: " + ", ".join(f"{k} {fmt(100 * (v or 0), '.0f')}%"
                                                   for k, v in full["fraction_of_wall"].items()))
    if report.get("targets"):
        lines.append("")
        lines.append("targets:")
        for t in report["targets"]:
            flag = {True: "MET", False: "not met", None: "-"}[t["met"]]
            bound = (f"  (ceiling at the measured matmul peak: {fmt(t['ceiling'])}"
                     f"{'' if t['reachable'] else ', out of reach on this machine'})") if "ceiling" in t else ""
            lines.append(f"  [{flag:>7}] {t['target']}: {fmt(t['value'], '.3g')}{bound}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cvt_lab.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="write the JSON report here")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch", type=int, default=None, help="batch size (default 16; --quick 2)")
    p.add_argument("--precision", default="both", choices=("fp32", "bf16", "both"))
    p.add_argument("--model", default=None, help="our preset (default cvt13; --quick: cvt_tiny, 1/2/3 blocks)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: PyTorch's, = cores)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per figure (default 7)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 2)")
    p.add_argument("--memory-batch", type=int, default=None, help="batch of the memory figure (default 32)")
    p.add_argument("--resolutions", type=lambda s: [int(v) for v in s.split(",")], default=None,
                   help="comma-separated sizes (default 160,224,288,384)")
    p.add_argument("--clock", default="wall", choices=tuple(CLOCKS),
                   help="wall: elapsed time (the figures); cpu: this process's CPU time, steadier on a shared "
                        "machine with --threads 1 (with more threads it counts spin-waiting too)")
    p.add_argument("--malloc", default="default", choices=("default", "tuned"),
                   help="glibc allocator setting of this process (see set_malloc)")
    p.add_argument("--no-levers", dest="levers", action="store_false", help="skip the per-lever measurements")
    p.add_argument("--no-steady", dest="steady", action="store_false",
                   help="skip the steady cross-check of the throughput (--steady-threads, CPU clock)")
    p.add_argument("--steady-threads", type=int, default=1,
                   help="threads of the levers and the steady cross-check on CPU (1: timed on CPU time)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes of compiling)")
    p.add_argument("--no-rss", dest="rss", action="store_false", help="skip the subprocess RSS memory figure")
    p.add_argument("--no-training-loop", dest="training_loop", action="store_false",
                   help="skip the `python -m cvt_lab` start-up / data-wait run")
    p.add_argument("--training-loop-args", default="trainer.max_epochs=1",
                   help="overrides of that run (space-separated)")
    p.add_argument("--no-accuracy", dest="accuracy", action="store_false",
                   help="skip the default digits run in fp32 and bf16 (test accuracy of each)")
    p.add_argument("--quick", action="store_true", help="tiny model, batch and iterations (seconds; for tests)")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-args", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-name", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--child-precision", default="fp32", help=argparse.SUPPRESS)
    o = p.parse_args(argv)
    q = o.quick
    defaults = dict(batch=2 if q else 16, model="cvt_tiny" if q else "cvt13", iters=2 if q else 7,
                    warmup=1 if q else 2, memory_batch=4 if q else 32, resolutions=[32, 48] if q else [160, 224, 288, 384])
    for k, v in defaults.items():
        if getattr(o, k) is None:
            setattr(o, k, v)
    if o.threads is None:  # --quick: one thread, so a busy machine's other load cannot stall a thread team
        o.threads = 1 if q else torch.get_num_threads()
    o.precisions = list(PRECISIONS) if o.precision == "both" else [o.precision]
    if q:  # subprocesses cost seconds each: --quick measures in this process only
        o.rss, o.compile, o.training_loop, o.accuracy = False, False, False, False
    return o


def model_args(opts: argparse.Namespace) -> dict[str, Any]:
    if opts.model == "cvt_tiny":
        # transformers takes each stage's drop-path rate as rates[stage] of that stage's blocks, so stage i
        # needs more than i blocks
        args = preset_args("cvt_tiny", depths=[1, 2, 3], num_classes=10)
    else:
        args = preset_args(opts.model, num_classes=1000)
    if opts.image_size is None:
        opts.image_size = args["img_size"]
    return args


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    CLOCK["now"] = CLOCKS[opts.clock]
    if opts._child:
        child = {"memory": memory_child, "throughput": throughput_child, "compile": compile_child}[opts._child]
        print(json.dumps(child(opts)))
        return 0
    if opts.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    applied = set_malloc(opts.malloc)
    torch.set_num_threads(opts.threads)
    args = model_args(opts)
    started = time.time()
    iters, warmup = opts.iters, opts.warmup
    import transformers

    report: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:] if argv is None else argv,
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "device": opts.device, "device_name": torch.cuda.get_device_name() if opts.device == "cuda" else cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_features": cpu_matrix_features(),
            "cores": os.cpu_count(),
            "threads": opts.threads, "malloc": opts.malloc, "malloc_applied": applied, "clock": opts.clock,
            "load_average_start": load_average(), "optimizer": "AdamW (fused where available), lr 1e-4, wd 0.05",
        },
        "config": {"model": opts.model, "model_args": args, "image_size": opts.image_size, "batch": opts.batch,
                   "memory_batch": opts.memory_batch, "precisions": opts.precisions, "iters": iters,
                   "warmup": warmup, "resolutions": opts.resolutions, "quick": opts.quick},
    }

    def log(msg: str) -> None:
        """Progress on stderr; the report so far is saved at every step, so a failure late in a long run
        keeps what was measured."""
        print(f"[bench {time.time() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)
        save(report, opts.out)

    log("matmul peak")
    n = 256 if opts.quick else (8192 if opts.device == "cuda" else 2048)
    report["matmul_peak_gflops"] = {p: matmul_peak(opts.device, p, n, 3 if opts.quick else 7) for p in opts.precisions}
    report["matmul_peak_gflops_size"] = n

    pair = Pair(args, opts.device)
    report["complexity"] = {name: {"params": pair.params()[name], "macs": macs(m, opts.image_size)}
                            for name, m in pair.models.items()}

    report["throughput"] = {}
    for p in opts.precisions:
        log(f"throughput {p}")
        res = bench_throughput(pair, opts, p, opts.image_size, iters, warmup)
        for name in NAMES:
            add_flops(res[name], report["complexity"][name]["macs"], report["matmul_peak_gflops"][p])
        res["ratio"] = ratios(res)
        report["throughput"][p] = res
    if "bf16" in report["throughput"] and "fp32" in report["throughput"]:
        tp = report["throughput"]
        tp["bf16"]["ratio_vs_theirs_fp32"] = bf16_over_fp32(tp, "theirs")
        tp["bf16"]["ratio_vs_ours_fp32"] = bf16_over_fp32(tp, "ours")

    log(f"memory at batch {opts.memory_batch}")
    mem_precision = opts.precisions[0]
    mem = {"batch": opts.memory_batch, "precision": mem_precision,
           "method": "peak live tensor bytes in a steady-state training step: torch.profiler allocator events"
                     if opts.device == "cpu" else "torch.cuda.max_memory_allocated over a steady-state training step"}
    mem.update(memory_in_process(pair, opts.memory_batch, opts.image_size, opts.device, mem_precision))
    mem["ratio"] = {"peak_mib": ratio(mem["ours"]["peak_mib"], mem["theirs"]["peak_mib"])}
    if opts.rss and opts.device == "cpu":
        mem["rss_method"] = "fresh subprocess per model: ru_maxrss after 3 training steps minus RSS before the first"
        for name in NAMES:
            mem[name].update(run_child(child_cmd(opts, args, "memory", child_name=name, child_precision=mem_precision,
                                                 malloc=opts.malloc)))
        mem["ratio"]["peak_rss_growth_mib"] = ratio(mem["ours"].get("peak_rss_growth_mib"),
                                                    mem["theirs"].get("peak_rss_growth_mib"))
    report["memory"] = mem

    log("numerics")
    report["numerics"] = numerics(args, opts.image_size, opts.device)

    log(f"resolutions {opts.resolutions}")
    res_iters, res_warmup = (iters, warmup) if opts.quick else (max(3, iters // 2), 1)
    report["resolution"] = bench_resolution(pair, opts, opts.precisions[0], res_iters, res_warmup)

    # Small effects need steady clocks: on CPU the levers (and the steady cross-check) are timed with
    # --steady-threads (default 1) on CPU time, which other processes on a shared machine barely disturb.
    steady = {"threads": opts.steady_threads, "clock": "cpu" if opts.steady_threads == 1 else "wall"}
    if opts.device != "cpu":
        steady = {"threads": opts.threads, "clock": "wall"}
    lev_iters = iters if opts.quick else max(5, iters // 2 + 1)
    if opts.steady and opts.device == "cpu":
        log(f"steady cross-check: {steady['threads']} thread(s), {steady['clock']} clock")
        with measuring(**steady):
            st = {}
            for p in opts.precisions:
                res = bench_throughput(pair, opts, p, opts.image_size, lev_iters, 1)
                res["ratio"] = ratios(res, ("images_per_s",))
                st[p] = res
            if "bf16" in st and "fp32" in st:
                st["bf16"]["ratio_vs_theirs_fp32"] = bf16_over_fp32(st, "theirs")
        report["throughput_steady"] = {**steady, "iters": lev_iters, **st}
    if opts.levers:
        log(f"levers: {steady['threads']} thread(s), {steady['clock']} clock")
        with measuring(**steady):
            report["levers"] = bench_levers(pair, opts, lev_iters, 1)
        report["levers_config"] = {**steady, "iters": lev_iters, "batch": opts.batch, "image_size": opts.image_size}
        if opts.device == "cpu" and not opts.quick:
            log("malloc default vs tuned (two subprocesses)")
            try:
                runs = {m: run_child(child_cmd(opts, args, "throughput", malloc=m, child_precision="fp32",
                                               iters=lev_iters, warmup=1, **steady)) for m in ("default", "tuned")}
                report["levers"]["malloc"] = {
                    "malloc": "tuned", "runs": runs, **steady,
                    "speedup": {n: {m: ratio(runs["tuned"][n][m]["images_per_s"], runs["default"][n][m]["images_per_s"])
                                    for m in ("train", "infer")} for n in NAMES},
                    "note": "speedup = images/s with malloc tuned / with malloc default (fp32), per model"}
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                report["levers"]["malloc"] = {"note": str(e)}
    if opts.compile:
        log("torch.compile (subprocess, empty inductor cache)")
        with tempfile.TemporaryDirectory() as cache:
            try:
                report.setdefault("levers", {})["compile"] = run_child(
                    child_cmd(opts, args, "compile", malloc=opts.malloc, child_precision=",".join(opts.precisions),
                              iters=lev_iters, warmup=1, **steady),
                    timeout=7200, env={"TORCHINDUCTOR_CACHE_DIR": cache})
                report["levers"]["compile"].update(steady)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                report.setdefault("levers", {})["compile"] = {"note": str(e)}

    if opts.training_loop and opts.device == "cpu":
        log("training loop (python -m cvt_lab)")
        report["training_loop"] = bench_training_loop(opts.training_loop_args.split(), opts.threads)
    elif not opts.quick:
        report["training_loop"] = {"available": False, "note": "skipped (--no-training-loop or not on CPU)"}
    if opts.accuracy and opts.device == "cpu":
        log("default digits run, fp32 and bf16 (python -m cvt_lab)")
        report["digits_accuracy"] = bench_digits_accuracy(opts.threads)

    report["targets"] = check_targets(report)
    report["meta"]["load_average_end"] = load_average()
    report["meta"]["bench_wall_s"] = time.time() - started
    save(report, opts.out)
    text = table(report)
    print(text)
    if opts.out:
        opts.out.with_suffix(".txt").write_text(text + "\n")
        print(f"wrote {opts.out} and {opts.out.with_suffix('.txt')} (the table)")
    return 0


def save(report: dict, out: Path | None) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=float) + "\n")
        os.replace(tmp, out)


if __name__ == "__main__":
    raise SystemExit(main())
