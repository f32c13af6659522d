"""``python -m cvt_lab.prereg TABLE [--scale cpu] [--root experiments/prereg]``: the command line of a table's
registered confirmation sweep (what ``make tableN`` and ``make htr_ablation_*`` run; nothing when the table has
no registration).
The registration itself: :mod:`cvt_lab.report.prereg`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cvt_lab.errors import EXIT_BAD_INPUT
from cvt_lab.report.prereg import PREREG_DIR, PreregError, experiment_axis, find_prereg, sweep_overrides


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cvt_lab.prereg", description=__doc__.split("\n")[0])
    p.add_argument("table", help="a table: table5 ... table8, htr_pos_embed, htr_conv_embed, htr_kv_stride")
    p.add_argument("--scale", default="cpu")
    p.add_argument("--root", type=Path, default=PREREG_DIR, help="where the pre-registrations are")
    a = p.parse_args(argv)
    try:
        prereg = find_prereg(a.table, a.scale, a.root)
        if prereg is None:
            return 0  # nothing registered: the sweep runs as it is configured (exploratory)
        # experiment= and scale= come from the Makefile's own arguments
        print(shlex.join(sweep_overrides(prereg, experiment_axis(prereg.experiment))[2:]))
    except (PreregError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
