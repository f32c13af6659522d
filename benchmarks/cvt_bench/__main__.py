"""``python -m benchmarks.cvt_bench``: the command line, and the order the sections run in (see the package
docstring for what each measures)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from . import __doc__ as PACKAGE_DOC
from .harness import (CLOCKS, PRECISIONS, Timing, child_cmd, cpu_matrix_features, device_meta, intra_op_threads,
                      load_average, matmul_peak, ratio, run_child, save, set_malloc)
from .memory import memory_child, memory_in_process
from .models import Pair, macs, model_args
from .report import check_targets, table
from .sections import (bench_levers, bench_resolution, bench_throughput, bf16_over_fp32, compile_child,
                       numerics, ratios, side_by_side, throughput_child)

# Defaults by device: (--quick, cpu, cuda). CUDA: the setting, batch 128 at 224 and 384 px.
DEFAULTS: dict[str, tuple[Any, Any, Any]] = {
    "batch": (2, 16, 128), "model": ("cvt_tiny", "cvt13", "cvt13"), "iters": (2, 7, 15), "warmup": (1, 2, 3),
    "memory_batch": (4, 32, None), "resolutions": ([32, 48], [160, 224, 288, 384], [224, 384]),
    "memory_precision": ("fp32", "fp32", "bf16"),
}
MATMUL_SIZE = {"quick": 256, "cpu": 2048, "cuda": 8192}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cvt_bench", description=PACKAGE_DOC.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="write the JSON report here (and the table beside it, .txt)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch", type=int, default=None, help="batch size (default 16 on CPU, 128 on CUDA; --quick 2)")
    p.add_argument("--precision", default="both", choices=("fp32", "bf16", "both"))
    p.add_argument("--model", default=None, help="our preset (default cvt13; --quick: cvt_tiny, 1/2/3 blocks)")
    p.add_argument("--image-size", type=int, default=None, help="default: the preset's")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: PyTorch's, = cores)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per figure (default 7; CUDA 15)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 2; CUDA 3)")
    p.add_argument("--memory-batch", type=int, default=None, help="batch of the memory figure (CPU 32; CUDA --batch)")
    p.add_argument("--memory-precision", default=None, choices=PRECISIONS,
                   help="precision of the memory figure (CPU fp32; CUDA bf16)")
    p.add_argument("--resolutions", type=lambda s: [int(v) for v in s.split(",")], default=None,
                   help="comma-separated sizes (CPU 160,224,288,384: time per image; CUDA 224,384: every figure)")
    p.add_argument("--infer-batch", type=int, default=256, help="CUDA: batch of the bf16 inference figure")
    p.add_argument("--clock", default="wall", choices=tuple(CLOCKS),
                   help="wall: elapsed time (the figures); cpu: this process's CPU time, steadier on a shared "
                        "machine with --threads 1 (with more threads it counts spin-waiting too)")
    p.add_argument("--malloc", default="default", choices=("default", "tuned"),
                   help="glibc allocator setting of this process (see harness.set_malloc)")
    p.add_argument("--no-levers", dest="levers", action="store_false", help="skip the per-lever measurements")
    p.add_argument("--no-steady", dest="steady", action="store_false",
                   help="skip the steady cross-check of the throughput (--steady-threads, CPU clock)")
    p.add_argument("--steady-threads", type=int, default=1,
                   help="threads of the levers and the steady cross-check on CPU (1: timed on CPU time)")
    p.add_argument("--compile", action="store_true",
                   help="also measure torch.compile: CPU, ours in a subprocess; CUDA, a compiled twin of both "
                        "models beside the eager ones in every figure (minutes of compiling)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode of the CUDA twins (default: torch's)")
    p.add_argument("--no-rss", dest="rss", action="store_false", help="skip the subprocess RSS memory figure")
    p.add_argument("--no-training-loop", dest="training_loop", action="store_false",
                   help="skip the `python -m cvt_lab` start-up / data-wait run")
    p.add_argument("--training-loop-args", default="trainer.max_epochs=1",
                   help="overrides of that run (space-separated; CUDA prepends trainer=gpu)")
    p.add_argument("--no-accuracy", dest="accuracy", action="store_false",
                   help="skip the default digits run in fp32 and bf16 (CPU; test accuracy of each)")
    p.add_argument("--data", type=Path, default=None,
                   help="an ImageNet-layout folder (train/<class>/*.jpg): also measure the training loader")
    p.add_argument("--loader-workers", type=lambda s: [int(v) for v in s.split(",")], default=None,
                   help="worker counts of the loader figure (default 1, 2, 4, ... up to the cores)")
    p.add_argument("--quick", action="store_true", help="tiny model, batch and iterations (seconds; for tests)")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-args", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-name", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--child-precision", default="fp32", help=argparse.SUPPRESS)
    o = p.parse_args(argv)
    column = 0 if o.quick else (2 if o.device == "cuda" else 1)
    for k, values in DEFAULTS.items():
        if getattr(o, k) is None:
            setattr(o, k, values[column])
    if o.memory_batch is None:
        o.memory_batch = o.batch
    if o.threads is None:  # --quick: one thread, so a busy machine's other load cannot stall a thread team
        o.threads = 1 if o.quick else torch.get_num_threads()
    if o.loader_workers is None:
        o.loader_workers = [w for w in (1, 2, 4, 8, 16, 32) if w <= (os.cpu_count() or 1)]
    o.precisions = list(PRECISIONS) if o.precision == "both" else [o.precision]
    if o.quick:  # subprocesses cost seconds each: --quick measures in this process only
        o.rss, o.training_loop, o.accuracy = False, False, False
        o.compile = o.compile and o.device == "cuda"
    if o.data is not None and not (o.data / "train").is_dir():
        p.error(f"--data {o.data}: no train/ folder there; give an ImageNet-layout folder (train/<class>/*.jpg)")
    return o


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    if opts._child:
        child = {"memory": memory_child, "throughput": throughput_child, "compile": compile_child}[opts._child]
        print(json.dumps(child(opts)))
        return 0
    if opts.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False: run on a machine with a GPU, or "
              "use --device cpu", file=sys.stderr)
        return 2
    cuda = opts.device == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # as trainer=gpu runs: cuDNN picks its fastest convolutions
    applied = set_malloc(opts.malloc)
    torch.set_num_threads(opts.threads)
    args = model_args(opts.model)
    opts.image_size = opts.image_size or args["img_size"]
    started = time.time()
    timing = Timing(opts.iters, opts.warmup, opts.clock)
    import transformers

    report: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:] if argv is None else argv,
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "device": opts.device, **device_meta(opts.device),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_features": cpu_matrix_features(),
            "cores": os.cpu_count(), "threads": opts.threads, "malloc": opts.malloc, "malloc_applied": applied,
            "clock": opts.clock, "load_average_start": load_average(),
            "optimizer": "AdamW (fused where available), lr 1e-4, wd 0.05",
        },
        "config": {"model": opts.model, "model_args": args, "image_size": opts.image_size, "batch": opts.batch,
                   "memory_batch": opts.memory_batch, "precisions": opts.precisions, "iters": opts.iters,
                   "warmup": opts.warmup, "resolutions": opts.resolutions, "quick": opts.quick,
                   "compile": opts.compile, "compile_mode": opts.compile_mode},
    }

    def log(msg: str) -> None:
        """Progress on stderr; the report so far is saved at every step, so a failure late in a long run
        keeps what was measured."""
        print(f"[bench {time.time() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)
        save(report, opts.out)

    log("matmul peak")
    n = MATMUL_SIZE["quick" if opts.quick else opts.device]
    peak = report["matmul_peak_gflops"] = {p: matmul_peak(opts.device, p, n, 3 if opts.quick else 7)
                                           for p in opts.precisions}
    report["matmul_peak_gflops_size"] = n

    pair = Pair(args, opts.device, compiled=opts.compile and cuda, compile_mode=opts.compile_mode)
    params = pair.params()
    report["complexity"] = {name: {"params": params[name], "macs": macs(pair.models[name], opts.image_size)}
                            for name in ("ours", "theirs")}

    tp = report["throughput"] = {}
    for p in opts.precisions:
        log(f"throughput {p}" + (" (compiling the twins first)" if opts.compile and cuda else ""))
        tp[p] = side_by_side(pair, opts.device, opts.batch, p, opts.image_size, timing, peak[p])
    if "bf16" in tp and "fp32" in tp:
        tp["bf16"]["ratio_vs_theirs_fp32"] = bf16_over_fp32(tp, "theirs")
        tp["bf16"]["ratio_vs_ours_fp32"] = bf16_over_fp32(tp, "ours")
    if cuda and "bf16" in opts.precisions:
        log(f"bf16 inference at batch {opts.infer_batch}")
        report["inference_batch"] = {
            "batch": opts.infer_batch, "precision": "bf16", "image_size": opts.image_size,
            "results": side_by_side(pair, opts.device, opts.infer_batch, "bf16", opts.image_size, timing, peak["bf16"],
                                    modes=("infer",))}

    log(f"memory at batch {opts.memory_batch}, {opts.memory_precision}")
    mem = {"batch": opts.memory_batch, "precision": opts.memory_precision,
           "method": "torch.cuda.max_memory_allocated over a steady-state training step" if cuda else
                     "peak live tensor bytes in a steady-state training step: torch.profiler allocator events"}
    mem.update(memory_in_process(pair, opts.memory_batch, opts.image_size, opts.device, opts.memory_precision))
    mem["ratio"] = {"peak_mib": ratio(mem["ours"]["peak_mib"], mem["theirs"]["peak_mib"])}
    if opts.rss and not cuda:
        mem["rss_method"] = "fresh subprocess per model: peak RSS (VmHWM) over 3 training steps minus RSS before them"
        for name in ("ours", "theirs"):
            mem[name].update(run_child(child_cmd(opts, args, "memory", child_name=name,
                                                 child_precision=opts.memory_precision, malloc=opts.malloc)))
        mem["ratio"]["peak_rss_growth_mib"] = ratio(mem["ours"].get("peak_rss_growth_mib"),
                                                    mem["theirs"].get("peak_rss_growth_mib"))
    report["memory"] = mem

    log("numerics")
    report["numerics"] = numerics(args, opts.image_size, opts.device)

    other_sizes = [s for s in opts.resolutions if s != opts.image_size]
    if cuda and other_sizes:
        by_size = report["throughput_by_size"] = {}
        for size in other_sizes:
            torch.compiler.reset()  # the graphs of the last size are done with: stay under dynamo's recompile limit
            by_size[str(size)] = {}
            for p in opts.precisions:
                log(f"throughput {p} at {size}px")
                by_size[str(size)][p] = side_by_side(pair, opts.device, opts.batch, p, size, timing, peak[p])
    elif not cuda:
        log(f"resolutions {opts.resolutions}")
        res_timing = timing if opts.quick else Timing(max(3, opts.iters // 2), 1, opts.clock)
        report["resolution"] = bench_resolution(pair, opts.device, opts.batch, opts.precisions[0], opts.resolutions,
                                                res_timing)

    cpu_side_sections(report, pair, args, opts, log)
    if opts.levers:
        # Small effects need steady clocks: on CPU the levers are timed with --steady-threads (default 1) on
        # CPU time, which other processes on a shared machine barely disturb.
        steady = steady_setting(opts)
        lever_timing = Timing(opts.iters if opts.quick else max(5, opts.iters // 2 + 1), 1, steady["clock"])
        log(f"levers: {steady['threads']} thread(s), {steady['clock']} clock")
        with intra_op_threads(steady["threads"]):
            report.setdefault("levers", {}).update(bench_levers(pair, opts.device, opts.batch, opts.image_size,
                                                                opts.precisions, lever_timing))
        report["levers_config"] = {**steady, "iters": lever_timing.iters, "batch": opts.batch,
                                   "image_size": opts.image_size}

    if opts.training_loop:
        log("training loop (python -m cvt_lab, timed by a Lightning profiler)")
        from .loop import bench_training_loop

        overrides = (["trainer=gpu"] if cuda else []) + opts.training_loop_args.split()
        report["training_loop"] = bench_training_loop(overrides, opts.threads)
    elif not opts.quick:
        report["training_loop"] = {"available": False, "note": "skipped (--no-training-loop)"}
    if opts.accuracy and not cuda:
        log("default digits run, fp32 and bf16 (python -m cvt_lab)")
        from .loop import bench_digits_accuracy

        report["digits_accuracy"] = bench_digits_accuracy(opts.threads)
    if opts.data is not None:
        log(f"loader over {opts.data}, workers {opts.loader_workers}")
        from .loader import bench_loader

        report["loader"] = bench_loader(opts.data, opts.loader_workers, batch_size=opts.batch,
                                        image_size=opts.image_size)
        report["loader"]["model_train_images_per_s"] = {p: r["ours"]["train"]["images_per_s"] for p, r in tp.items()}

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


def steady_setting(opts: argparse.Namespace) -> dict[str, Any]:
    """Threads and clock of the small-effect figures: on CPU ``--steady-threads`` on CPU time when that is one
    thread; on CUDA this run's threads and wall time."""
    if opts.device != "cpu":
        return {"threads": opts.threads, "clock": "wall"}
    return {"threads": opts.steady_threads, "clock": "cpu" if opts.steady_threads == 1 else "wall"}


def cpu_side_sections(report: dict, pair: Pair, args: dict, opts: argparse.Namespace, log) -> None:
    """The CPU-only figures: the steady cross-check, the allocator lever and ``torch.compile`` (subprocesses)."""
    if opts.device != "cpu":
        return
    steady = steady_setting(opts)
    iters = opts.iters if opts.quick else max(5, opts.iters // 2 + 1)
    steady_timing = Timing(iters, 1, steady["clock"])
    if opts.steady:
        log(f"steady cross-check: {steady['threads']} thread(s), {steady['clock']} clock")
        with intra_op_threads(steady["threads"]):
            st = {}
            for p in opts.precisions:
                res = bench_throughput(pair, opts.device, opts.batch, p, opts.image_size, steady_timing)
                res["ratio"] = ratios(res, ("images_per_s",))
                st[p] = res
            if "bf16" in st and "fp32" in st:
                st["bf16"]["ratio_vs_theirs_fp32"] = bf16_over_fp32(st, "theirs")
        report["throughput_steady"] = {**steady, "iters": iters, **st}
    levers: dict[str, Any] = {}
    if opts.levers and not opts.quick:
        log("malloc default vs tuned (two subprocesses)")
        try:
            runs = {m: run_child(child_cmd(opts, args, "throughput", malloc=m, child_precision="fp32", iters=iters,
                                           warmup=1, **steady)) for m in ("default", "tuned")}
            levers["malloc"] = {
                "malloc": "tuned", "runs": runs, **steady,
                "speedup": {n: {m: ratio(runs["tuned"][n][m]["images_per_s"], runs["default"][n][m]["images_per_s"])
                                for m in ("train", "infer")} for n in ("ours", "theirs")},
                "note": "speedup = images/s with malloc tuned / with malloc default (fp32), per model"}
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            levers["malloc"] = {"note": str(e)}
    if opts.compile:
        log("torch.compile (subprocess, empty inductor cache)")
        with tempfile.TemporaryDirectory() as cache:
            try:
                levers["compile"] = run_child(
                    child_cmd(opts, args, "compile", malloc=opts.malloc, child_precision=",".join(opts.precisions),
                              iters=iters, warmup=1, **steady), timeout=7200, env={"TORCHINDUCTOR_CACHE_DIR": cache})
                levers["compile"].update(steady)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                levers["compile"] = {"note": str(e)}
    if levers:
        report.setdefault("levers", {}).update(levers)


if __name__ == "__main__":
    raise SystemExit(main())
