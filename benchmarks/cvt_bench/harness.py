"""Timing harness: the process settings, the steps being timed, interleaved timing and the matmul peak."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PRECISIONS = ("fp32", "bf16")
MIB = 2**20
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
REPO_ROOT = Path(__file__).resolve().parents[2]  # holds the ``benchmarks`` package: children import it from here


@dataclass(frozen=True)
class Timing:
    """How a figure is timed: ``warmup`` untimed rounds, then ``iters`` timed ones, on ``clock`` (``wall``:
    elapsed time; ``cpu``: this process's CPU time, steadier on a shared machine with one thread)."""

    iters: int
    warmup: int
    clock: str = "wall"


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


def _cpuinfo_field(name: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    return None


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_matrix_features() -> dict[str, bool] | None:
    """Which bf16 / matrix instructions the CPU has (Linux): AMX tiles give bf16 GEMMs many times the fp32
    rate, AVX512_BF16 about twice; the CPU bf16 figures and their ceilings depend on it."""
    flags = _cpuinfo_field("flags")
    if flags is None:
        return None
    present = set(flags.split())
    return {f: f in present for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(v, 2) for v in os.getloadavg()]
    return None


def device_meta(device: str) -> dict[str, Any]:
    """What the figures depend on besides the code: the device and, on CUDA, the fp32 matmul settings
    (TF32 would change what an "fp32" figure means)."""
    if device != "cuda":
        return {"device_name": cpu_name()}
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"device_name": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(device: str, precision: str) -> torch.autocast:
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """Temporarily run with ``threads`` intra-op threads."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# ------------------------------------------------------------------------------------------ the steps


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The logits of ours (a tensor) or of transformers' model (an output with ``.logits``)."""
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def make_optimizer(model: nn.Module, device: str) -> torch.optim.Optimizer:
    """The same AdamW for both models: the fused kernel where PyTorch has one for the device."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    except (RuntimeError, TypeError):  # older PyTorch / a device without a fused AdamW
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)


def batch(size: int, image_size: int, num_classes: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 3, image_size, image_size, generator=g).to(device)
    y = torch.randint(0, num_classes, (size,), generator=g).to(device)
    return x, y


def train_step_fn(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  device: str, precision: str) -> Callable[[], None]:
    def step() -> None:
        model.train()
        with autocast(device, precision):
            loss = F.cross_entropy(logits(model, x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def infer_fn(model: nn.Module, x: torch.Tensor, device: str, precision: str) -> Callable[[], None]:
    def run() -> None:
        model.eval()
        with torch.inference_mode(), autocast(device, precision):
            logits(model, x)

    return run


# ------------------------------------------------------------------------------------------- timing


def interleaved(fns: dict[str, Callable[[], None]], timing: Timing, device: str) -> dict[str, list[float]]:
    """Seconds per call of each function; rounds alternate the order so drift and load hit all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys, now = list(fns), CLOCKS[timing.clock]
    for i in range(timing.warmup + timing.iters):
        for k in keys if i % 2 == 0 else keys[::-1]:
            sync(device)
            t0 = now()
            fns[k]()
            sync(device)
            if i >= timing.warmup:
                times[k].append(now() - t0)
    return times


def summarize(samples: list[float], images: int) -> dict[str, Any]:
    med = statistics.median(samples)
    return {"images_per_s": images / med, "ms_per_step": 1e3 * med, "ms_per_image": 1e3 * med / images,
            "ms_min": 1e3 * min(samples), "samples_ms": [round(1e3 * s, 2) for s in samples]}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def matmul_peak(device: str, precision: str, n: int, iters: int) -> float:
    """GFLOP/s of an ``n x n`` by ``n x n`` matmul: the attainable matrix-multiply rate of this machine."""
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    times = interleaved({"mm": lambda: torch.mm(a, b, out=out)}, Timing(iters, 2), device)["mm"]
    return 2 * n**3 / statistics.median(times) / 1e9


# --------------------------------------------------------------------------------------- subprocesses


def child_cmd(opts, model_args: dict, task: str, **extra: Any) -> list[str]:
    """``python -m benchmarks.cvt_bench --_child TASK`` with this run's settings; ``extra`` overrides or adds
    flags."""
    flags = {"device": opts.device, "threads": opts.threads, "image_size": opts.image_size,
             "memory_batch": opts.memory_batch, "batch": opts.batch, "iters": opts.iters, "warmup": opts.warmup,
             "clock": opts.clock, **extra}
    cmd = [sys.executable, "-m", "benchmarks.cvt_bench", "--_child", task, "--model-args", json.dumps(model_args)]
    for k, v in flags.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this one's, with the repository root importable."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore", **extra}


def run_child(cmd: list[str], timeout: float = 3600, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd`` and return the JSON object its last line of output holds."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(**(env or {})))
    if proc.returncode != 0:
        raise RuntimeError(f"bench child failed ({' '.join(cmd[3:6])}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def save(report: dict, out: Path | None) -> None:
    """Write the report atomically (it is saved after every section, so a late failure keeps the rest)."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=float) + "\n")
        os.replace(tmp, out)
