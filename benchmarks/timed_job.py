"""One ``python -m cvt_lab`` job in a fresh process, timed from outside: what the default-run benchmarks
(default_run.py, htr_run.py) repeat."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from cvt_lab.results import RunRecord, read_record


def run_timed(cmd: list[str], run_dir: str) -> tuple[RunRecord, float] | None:
    """Run ``cmd`` (a job writing into ``run_dir``); its record and wall seconds, or None (the error printed)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"error: {' '.join(cmd[1:])} exited {proc.returncode}:\n{proc.stderr.strip()[-2000:]}", file=sys.stderr)
        return None
    return read_record(run_dir), wall
