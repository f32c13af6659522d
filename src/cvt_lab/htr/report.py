"""``python -m cvt_lab.htr.report SWEEP_DIR | EXPERIMENT [--out DIR] [...]``: the report of a handwriting ablation
sweep (``experiment=htr_ablation_*``), kept at this address for scripts: the same report as
``python -m cvt_lab.report`` (its options too), with verdicts under the confirmation protocol of Tables 5-8 on test
CER (lower is better): confirmatory when the table's pre-registration (``experiments/prereg/<table>.yaml``) is
committed before the sweep ran it, else exploratory. Writes ``<out>/<table>.{md,csv,png}`` (``experiments/reports``
by default) and prints the markdown.

    python -m cvt_lab.htr.report outputs/sweeps/htr_pos_embed_cpu [--out experiments/reports]
    python -m cvt_lab.htr.report htr_ablation_pos_embed [--metric val/cer]
"""

from __future__ import annotations

from cvt_lab.report.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
