"""The benchmark's training-loop profiler on a real job (in-process, a few steps): the timings it writes. Its share
arithmetic and the rest of the benchmark are tests/unit/test_bench.py."""

from __future__ import annotations

import json
import time

from benchmarks.cvt_bench.loop import run_timed


def test_training_loop_is_timed_by_a_lightning_profiler(tmp_path):
    """The job composed as the CLI composes it, with the profiler given to its Trainer: a few steps."""
    timings = tmp_path / "timings.json"
    run_timed(["debug=tiny"], tmp_path / "run", timings, launched=time.time())
    stats = json.loads(timings.read_text())
    assert (stats["epochs"], stats["steps"]) == (1, 2)
    assert stats["step_s"] > 0 and stats["validation_s"] > 0 and stats["test_s"] > 0 and stats["first_step_s"] > 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "finished"
