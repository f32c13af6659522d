"""``python -m cvt_lab.plan experiment=NAME [scale=paper] [OVERRIDES ...] [--measure] [--json PATH]``: see
:mod:`cvt_lab.plan`. Exit codes: 0 the plan, 2 bad input (one message naming the problem)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cvt_lab.exits import BAD_INPUT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cvt_lab.plan", description=__doc__.split(":")[0])
    parser.add_argument("overrides", nargs="*", help="the sweep's overrides, as given to `python -m cvt_lab ... -m`")
    parser.add_argument("--measure", action="store_true",
                        help="time a few training steps of each model on its own device (default: benchmarks)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model with --measure")
    parser.add_argument("--bench", action="append", type=Path, default=None, metavar="JSON",
                        help="a benchmark's results to read throughput from; repeatable (default: experiments/bench)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the plan as JSON")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="what to print")
    parser.add_argument("-m", "--multirun", action="store_true", help="ignored: the plan is always of the sweep")
    return parser.parse_intermixed_args(argv)  # overrides before and after the options


def main(argv: list[str] | None = None) -> int:
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    from cvt_lab.plan import make_plan, render

    args = parse_args(argv)
    try:
        plan = make_plan(args.overrides, measure=args.measure, steps=args.steps, benchmarks=args.bench)
    except MissingConfigException as e:
        options = f"; valid choices: {', '.join(o for o in e.options if not o.startswith('_'))}" if e.options else ""
        return fail(f"{str(e).strip().splitlines()[0]}{options}")
    except (HydraException, OmegaConfBaseException, ValueError, FileNotFoundError) as e:
        return fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(plan, indent=2) + "\n")
    print(json.dumps(plan, indent=2) if args.format == "json" else render(plan))
    return 0


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
