"""Measure `python -m cvt_lab experiment=htr` (the CvT line recognizer on digit_lines, CPU) against its target:
test CER <= 5% within 300 s wall-clock on 2 CPU cores, start-up included.

    python benchmarks/htr_run.py [--repeats 1] [--target-wall-s 300] [--out experiments/bench/htr_run.json]
                                 [-- OVERRIDES...]

Each repeat is a fresh process timed from outside (interpreter start-up, imports, composing the lines, training,
test); the run's own results.json gives its CER / WER. The machine's load average before and after is recorded:
on a shared machine the wall time says as much about the neighbours as about the job.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from timed_job import run_timed  # beside this script

TARGET_CER = 0.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--target-wall-s", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/htr_run.json"))
    parser.add_argument("--samples", type=Path, default=Path("docs/img/htr_samples.png"),
                        help="where to copy the first run's samples.png (the README shows it)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. model=htr_crnn")
    args = parser.parse_args()

    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "cvt_lab", "experiment=htr", f"seed={i}", f"hydra.run.dir={tmp}",
                   "trainer.enable_progress_bar=false", *args.overrides]
            load_before = os.getloadavg()[0]
            done = run_timed(cmd, tmp)
            if done is None:
                return 1
            record, wall = done
            if i == 0 and args.samples and (Path(tmp) / "samples.png").is_file():
                args.samples.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path(tmp) / "samples.png", args.samples)
        runs.append({"seed": i, "wall_s": round(wall, 2), "test/cer": record.test_cer, "test/wer": record.test_wer,
                     "epochs": record.epochs, "threads": record.threads, "startup_s": record.startup_s,
                     "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]})
        print(f"seed {i}: test CER {100 * record.test_cer:.2f}%, WER {100 * record.test_wer:.2f}% in {wall:.1f} s "
              f"(load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

    cers, walls = [r["test/cer"] for r in runs], [r["wall_s"] for r in runs]
    summary = {
        "command": "python -m cvt_lab experiment=htr " + " ".join(args.overrides),
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "test_cer_max": max(cers),
        "test_cer_mean": statistics.mean(cers),
        "wall_s_max": max(walls),
        "target": {"test/cer": TARGET_CER, "wall_s": args.target_wall_s},
        "meets_target": max(cers) <= TARGET_CER and max(walls) <= args.target_wall_s,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"worst of {len(runs)}: test CER {100 * max(cers):.2f}% (target <= {100 * TARGET_CER:.0f}%), wall "
          f"{max(walls):.1f} s (target <= {args.target_wall_s:.0f} s): "
          f"{'MEETS' if summary['meets_target'] else 'MISSES'} the target; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
