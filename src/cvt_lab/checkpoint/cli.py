"""The command line of :mod:`cvt_lab.checkpoint`: ``convert`` (between key layouts) and ``export`` (to other tools).

    python -m cvt_lab.checkpoint convert SRC DST [--to released|cvt_lab]
    python -m cvt_lab.checkpoint export RUN_OR_CKPT [--to safetensors|onnx|transformers] [--out PATH] [--model PRESET]

Bad input (a missing or unreadable checkpoint, an architecture transformers cannot express, an unwritable
destination) ends with one message and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from cvt_lab.checkpoint.exports import EXPORT_FORMATS, DestinationExists, convert, export
from cvt_lab.errors import EXIT_BAD_INPUT

MISSING_PACKAGES = {"onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx", "transformers": "test"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cvt_lab.checkpoint", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert a checkpoint (released, transformers, Lightning or ours)")
    conv.add_argument("src")
    conv.add_argument("dst", help="the file to write (safetensors when it ends in .safetensors)")
    conv.add_argument("--to", choices=("released", "cvt_lab"), default="released")
    conv.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    exp = sub.add_parser("export", help="export a run or checkpoint as safetensors, ONNX or a transformers directory")
    exp.add_argument("src", metavar="RUN_OR_CKPT",
                     help="a run directory (its checkpoints/last.ckpt), a checkpoint file or directory, "
                          "or hf-hub:ORG/NAME")
    exp.add_argument("--to", choices=EXPORT_FORMATS, default="safetensors")
    exp.add_argument("--out", help="where to write (default: RUN/export/model.<format>, or beside the checkpoint)")
    exp.add_argument("--model", help="the preset the checkpoint was trained as, when no run directory says it")
    exp.add_argument("--image-size", type=int, help="ONNX: the traced image size (default: the model's img_size)")
    exp.add_argument("--overwrite", action="store_true", help="replace the destination if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    dst = args.dst if args.command == "convert" else args.out
    try:
        if args.command == "convert":
            out, diff = convert(args.src, args.dst, args.to, args.overwrite), None
        else:
            out, diff = export(args.src, args.to, args.out, args.model, args.image_size, args.overwrite)
    except ModuleNotFoundError as e:
        extra = MISSING_PACKAGES.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"error: export --to {args.to} needs {e.name}: pip install 'cvt_lab[{extra}]'", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, FileNotFoundError, DestinationExists) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # the destination cannot be written (read-only, not a directory, no space)
        print(f"error: cannot write {dst or 'the export'}: {e.strerror or e}; give a writable destination",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "convert":
        print(f"wrote {out} ({args.to} layout)")
    else:
        if isinstance(diff, dict):  # a line recognizer: checked per width
            diff = ", ".join(f"{k}: {v:.3g}" for k, v in diff.items())
        elif diff is not None:
            diff = f"{diff:.3g}"
        print(f"wrote {out} ({args.to})" + (f"; max |diff| of its logits from PyTorch's: {diff}" if diff else ""))
    return 0
