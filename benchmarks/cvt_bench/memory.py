"""Peak training memory: live tensor bytes (profiler allocator events on CPU, ``max_memory_allocated`` on
CUDA) in this process, and peak RSS growth of a fresh process per model (CPU)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from .harness import MIB, batch, make_optimizer, set_malloc, train_step_fn
from .models import Pair


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


def tensor_bytes(tensors: Iterator[torch.Tensor | None]) -> int:
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
        step = train_step_fn(model, opt, x, y, device, precision)
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


def memory_child(opts) -> dict:
    """Run in a fresh subprocess: build one model, then three training steps; report RSS before the first
    step and the peak RSS during the steps (``VmHWM``, reset just before them; not ``ru_maxrss``, which
    survives ``exec`` and so starts at the parent's RSS)."""
    set_malloc(opts.malloc)
    torch.set_num_threads(opts.threads)
    args = json.loads(opts.model_args)
    model = Pair(args, "cpu").models[opts.child_name]
    x, y = batch(opts.memory_batch, opts.image_size, args["num_classes"], "cpu")
    step = train_step_fn(model, make_optimizer(model, "cpu"), x, y, "cpu", opts.child_precision)
    rss0 = _proc_status_bytes("VmRSS")
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    for _ in range(3):
        step()
    peak = _proc_status_bytes("VmHWM")
    if rss0 is None or peak is None:
        return {"note": "no /proc/self/status: peak RSS not measured"}
    return {"rss_before_mib": rss0 / MIB, "peak_rss_mib": peak / MIB, "peak_rss_growth_mib": (peak - rss0) / MIB}
