"""The training loop as users run it: the ``python -m cvt_lab`` job in a fresh process, timed from the
inside by a Lightning profiler given to its Trainer (no patching of Lightning or the data loader).

    python -m benchmarks.cvt_bench.loop --timings FILE --run-dir DIR [OVERRIDES...]   # one timed run

The child composes the config with Hydra's compose API as the CLI does, adds ``trainer.profiler``
(:class:`LoopProfiler`) and runs :func:`cvt_lab.job.run`. Start-up is the time from launching the process
to the first training step; data wait the time Lightning spends fetching training batches; step time the
time of ``run_training_batch`` (forward, backward, optimizer); validation and test the time between their
``on_*_start`` and ``on_*_end`` hooks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.profilers import Profiler

from cvt_lab.results import RunRecord, read_record

from .harness import child_env, ratio

PROFILER_TARGET = "benchmarks.cvt_bench.loop.LoopProfiler"
STEP = "run_training_batch"  # Lightning's action names (lightning.pytorch.loops)
EPOCH = "run_training_epoch"
DATA_NEXT = re.compile(r"^\[\w+\]\.train_dataloader_next$")
LOOP_HOOK = re.compile(r"^\[LightningModule\]\w+\.on_(validation|test)_(start|end)$")


class LoopProfiler(Profiler):
    """A Lightning profiler that keeps the wall-time shares of a run and writes them as JSON to ``out`` at
    the end of every stage (fit, validate, test). ``launched``: ``time.time()`` when the process started."""

    def __init__(self, out: str, launched: float):
        super().__init__()
        self.out, self.launched = Path(out), launched
        self.stats: dict[str, Any] = {"first_step_s": None, "steps": 0, "step_s": 0.0, "data_s": 0.0, "gap_s": 0.0,
                                      "epochs": 0, "validation_s": 0.0, "test_s": 0.0}
        self._started: dict[str, float] = {}
        self._loop_started: dict[str, float] = {}
        self._last_step_end: float | None = None

    def start(self, action_name: str) -> None:
        now = time.perf_counter()
        self._started[action_name] = now
        if action_name == STEP:
            if self.stats["first_step_s"] is None:
                self.stats["first_step_s"] = time.time() - self.launched
            if self._last_step_end is not None:
                self.stats["gap_s"] += now - self._last_step_end
        elif action_name == EPOCH:
            self.stats["epochs"] += 1
            self._last_step_end = None  # the time between epochs is not time between steps
        elif (hook := LOOP_HOOK.match(action_name)) and hook[2] == "start":
            self._loop_started[hook[1]] = now
            self._last_step_end = None

    def stop(self, action_name: str) -> None:
        now = time.perf_counter()
        started = self._started.pop(action_name, None)
        if started is None:
            return
        if action_name == STEP:
            self.stats["steps"] += 1
            self.stats["step_s"] += now - started
            self._last_step_end = now
        elif DATA_NEXT.match(action_name):
            self.stats["data_s"] += now - started
        elif (hook := LOOP_HOOK.match(action_name)) and hook[2] == "end" and hook[1] in self._loop_started:
            self.stats[f"{hook[1]}_s"] += now - self._loop_started.pop(hook[1])

    def teardown(self, stage: str | None) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats))
        os.replace(tmp, self.out)
        super().teardown(stage)


def run_timed(overrides: list[str], run_dir: Path, timings: Path, launched: float) -> None:
    """Compose the config as ``python -m cvt_lab OVERRIDES`` does, give its Trainer a :class:`LoopProfiler`
    and run the job (its results land in ``run_dir``, as the CLI's do)."""
    from omegaconf import open_dict

    from cvt_lab.compose import compose
    from cvt_lab.job import run

    cfg, _ = compose(*overrides, hydra=True)  # as the CLI composes it, Hydra's runtime config set
    with open_dict(cfg.trainer):  # a Trainer argument the schema leaves out: for this benchmark only
        cfg.trainer.profiler = {"_target_": PROFILER_TARGET, "out": str(timings), "launched": launched}
    run(cfg, run_dir, overrides, started=launched)


def bench_training_loop(overrides: list[str], threads: int, timeout: float = 1800) -> dict:
    """One timed ``python -m cvt_lab`` job in a fresh process (e.g. the default digits run for one epoch):
    start-up, data wait, and the share of the wall time of each part."""
    with tempfile.TemporaryDirectory() as tmp:
        timings = Path(tmp) / "timings.json"
        cmd = [sys.executable, "-m", "benchmarks.cvt_bench.loop", "--timings", str(timings), "--run-dir",
               f"{tmp}/run", "--launched", repr(time.time()), *overrides, "trainer.enable_progress_bar=false"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=child_env(OMP_NUM_THREADS=str(threads)))
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not timings.is_file():
            return {"available": False, "overrides": overrides,
                    "note": f"the run failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}"}
        stats = json.loads(timings.read_text())
        record = read_record(Path(tmp) / "run") or RunRecord(status="failed")
    return {"available": True, "overrides": overrides, "wall_s": wall, **shares(stats, wall),
            "results_startup_s": record.startup_s, "test_acc1": record.test_acc1, "precision": record.precision}


def shares(stats: dict, wall: float) -> dict:
    """The report's training-loop figures from :class:`LoopProfiler`'s ``stats`` and the run's ``wall`` time."""
    loop = stats["step_s"] + stats["data_s"]
    accounted = ((stats["first_step_s"] or 0) + stats["step_s"] + stats["gap_s"] + stats["validation_s"]
                 + stats["test_s"])
    return {
        "startup_s": stats["first_step_s"],
        "fraction_of_wall": {"startup": ratio(stats["first_step_s"], wall), "train_steps": ratio(stats["step_s"], wall),
                             "between_steps_incl_data": ratio(stats["gap_s"], wall),
                             "validation": ratio(stats["validation_s"], wall), "test": ratio(stats["test_s"], wall),
                             "rest": ratio(wall - accounted, wall)},
        "validation_s": stats["validation_s"], "test_s": stats["test_s"], "steps": stats["steps"],
        "epochs": stats["epochs"], "step_s": stats["step_s"], "data_wait_s": stats["data_s"],
        "data_wait_fraction": ratio(stats["data_s"], loop), "between_steps_s": stats["gap_s"],
        "between_steps_fraction": ratio(stats["gap_s"], stats["step_s"] + stats["gap_s"]),
        "ms_per_step": ratio(1e3 * stats["step_s"], stats["steps"]),
    }


def bench_digits_accuracy(threads: int, extra: list[str] | None = None) -> dict:
    """The default digits run (every epoch) in fp32 and with bf16 autocast: does bf16 reach the same test
    accuracy, and how much faster is its step?"""
    runs = {p: bench_training_loop([*(extra or []), f"trainer.precision={flag}"], threads)
            for p, flag in (("fp32", "32-true"), ("bf16", "bf16-mixed"))}
    out: dict[str, Any] = {"runs": runs}
    if all(r.get("available") and r.get("test_acc1") is not None for r in runs.values()):
        out["test_acc1"] = {p: r["test_acc1"] for p, r in runs.items()}
        out["bf16_minus_fp32_points"] = 100 * (runs["bf16"]["test_acc1"] - runs["fp32"]["test_acc1"])
        out["step_speedup_bf16"] = ratio(runs["fp32"]["ms_per_step"], runs["bf16"]["ms_per_step"])
    return out


def main(argv: list[str] | None = None) -> int:
    launched = time.time()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cvt_bench.loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timings", type=Path, required=True, help="write the profiler's figures here (JSON)")
    parser.add_argument("--run-dir", type=Path, required=True, help="the job's run directory")
    parser.add_argument("--launched", type=float, default=launched, help="time.time() of the launch")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m cvt_lab")
    args = parser.parse_args(argv)
    run_timed(args.overrides, args.run_dir, args.timings, args.launched)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
