"""The report of a handwriting ablation sweep (``experiment=htr_ablation_*``): test CER / WER per row, mean and
standard deviation over seeds, the row with the lowest mean CER marked. Exploratory: these sweeps have no
pre-registration and no verdicts (the confirmation protocol of Tables 5-8 compares top-1 accuracy).

    python -m cvt_lab.htr.report outputs/sweeps/htr_pos_embed_cpu [--out experiments/reports]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from cvt_lab.results import RESULTS_FILE, read_record


def rows_of(sweep: Path) -> tuple[dict[str, list[tuple[int, float, float]]], list[str], str | None]:
    """row -> [(seed, test CER, test WER)] of the finished jobs; the failed or unfinished jobs; the table."""
    rows: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    other, table = [], None
    for path in sorted(sweep.glob(f"*/{RESULTS_FILE}")):
        record = read_record(path.parent)
        experiment = record.experiment or {}
        table = table or experiment.get("table")
        if record.status != "finished" or record.test_cer is None:
            other.append(f"{path.parent.name}: {record.status}{' (' + record.error + ')' if record.error else ''}")
            continue
        rows[str(experiment.get("row", path.parent.name))].append((record.seed, record.test_cer, record.test_wer))
    return rows, other, table


def render(sweep: Path) -> str:
    rows, other, table = rows_of(sweep)
    if not rows:
        raise ValueError(f"{sweep}: no finished handwriting jobs (results.json with test/cer) in this sweep")

    def stat(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"

    best = min(rows, key=lambda r: statistics.mean(c for _, c, _ in rows[r]))
    lines = [f"# {table or sweep.name}: handwriting ablation (exploratory)", "",
             f"Sweep `{sweep}`. Test CER and WER in %, mean ± sd over seeds; lower is better. Exploratory: no "
             "pre-registration, no verdict; the lowest mean CER is marked, not tested.", "",
             "| row | seeds | test CER % | test WER % |", "|---|---|---|---|"]
    for row, jobs in rows.items():
        mark = " **(lowest)**" if row == best else ""
        cer, wer = stat([c for _, c, _ in jobs]), stat([w for _, _, w in jobs])
        lines.append(f"| {row}{mark} | {len(jobs)} | {cer} | {wer} |")
    if other:
        lines += ["", "Not counted: " + "; ".join(other)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="the sweep directory (outputs/sweeps/<table>_<scale>)")
    parser.add_argument("--out", type=Path, default=None, help="write <out>/<sweep name>.md too")
    args = parser.parse_args(argv)
    try:
        text = render(args.sweep)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.sweep.name}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
