"""``python -m cvt_lab.complexity model=NAME [image_size=N] [model.ARG=VALUE ...]`` or ``--table2 [PATH]``:
a preset's parameters and multiply-adds, or Table 2's report. Exit codes: 0, 2 bad input (one message)."""

from __future__ import annotations

import sys

from cvt_lab.complexity import count_preset
from cvt_lab.errors import EXIT_BAD_INPUT
from cvt_lab.report.table2 import table2_markdown


def _parse_value(text: str):
    """A command-line value the way Hydra reads it: ``384``, ``[1,1,1]``, ``true``, ``dw_bn``."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--table2"]:
        from pathlib import Path

        out = Path(argv[1] if len(argv) > 1 else "experiments/reports/table2.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        text = table2_markdown()
        out.write_text(text)
        print(text)
        print(f"wrote {out}")
        return 0
    # Hydra-style arguments: model=NAME, image_size=N, model.ARG=VALUE (a preset override).
    name, image_size, overrides = "cvt13", None, {}
    try:
        for arg in argv:
            key, sep, text = arg.partition("=")
            if not sep or not (key in ("model", "image_size") or key.startswith("model.")):
                raise ValueError(f"unexpected argument {arg!r}; use model=NAME, image_size=N, model.ARG=VALUE "
                                 "or --table2 [PATH]")
            value = _parse_value(text)
            if key == "model":
                name = str(value)
            elif key == "image_size":
                image_size = int(value)
            else:
                overrides[key.removeprefix("model.")] = value
        c = count_preset(name, image_size, **overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{name}: {c}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
