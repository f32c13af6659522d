"""``python -m cvt_lab.report SWEEP_DIR | EXPERIMENT [--scale cpu] [--sweeps DIR] [--out DIR] [--metric M]
[--prereg-dir DIR] [--wandb]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cvt_lab.errors import EXIT_BAD_INPUT
from cvt_lab.report import __doc__ as DOC
from cvt_lab.report import experiment_sweep_dir, report
from cvt_lab.report.metrics import METRICS
from cvt_lab.report.prereg import PREREG_DIR


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cvt_lab.report", description=DOC.split("\n\n")[0])
    p.add_argument("sweep", help="a sweep directory, or an experiment name (conf/experiment/)")
    p.add_argument("--out", type=Path, default=Path("experiments/reports"))
    p.add_argument("--table", help="the paper table (default: from the sweep)")
    p.add_argument("--scale", default="cpu", help="with an experiment name: the scale of its sweep")
    p.add_argument("--sweeps", type=Path, default=Path("outputs/sweeps"),
                   help="with an experiment name: where sweeps are")
    p.add_argument("--metric", choices=list(METRICS),
                   help="what rows compare: the registered metric (default: the table's, test/acc1 or test/cer), or "
                        "its validation twin for pilots (val/acc1, val/cer)")
    p.add_argument("--prereg-dir", type=Path, default=PREREG_DIR,
                   help="where the pre-registrations are (experiments/prereg)")
    p.add_argument("--wandb", action="store_true",
                   help="also log the table and its plot into the sweep's W&B group (cvt_lab.report.wandb)")
    a = p.parse_args(argv)
    try:
        sweep = Path(a.sweep)
        if not sweep.is_dir() and "/" not in a.sweep:
            sweep = experiment_sweep_dir(a.sweep, a.scale, a.sweeps)
        paths = report(sweep, a.out, a.table, metric=a.metric, prereg_root=a.prereg_dir)
        if a.wandb:
            from cvt_lab.report.wandb import require_wandb

            require_wandb("python -m cvt_lab.report --wandb")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if a.wandb:
        from cvt_lab.report.wandb import log_report

        print(f"logged to W&B: {log_report(paths, sweep)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
