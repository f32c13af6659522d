"""Read, convert, load and export CvT weights: released ``.pth``, transformers, the Hugging Face Hub and our
Lightning checkpoints (docs/checkpoints.md lists the layouts, docs/interop.md the Hub and the exports).

* :func:`load_state` reads any layout from a file, a directory or ``hf-hub:org/name[@revision]``;
  :func:`to_cvt_lab` / :func:`to_released` rename; :func:`load_checkpoint` loads into a model and refuses a
  checkpoint of another architecture with one message (:mod:`.formats`, :mod:`.load`, :mod:`.hub`).
* :func:`export` writes a run or checkpoint as safetensors, ONNX or a transformers directory;
  :func:`export_released` and :func:`convert` write the released layout (:mod:`.exports`).

    python -m cvt_lab.checkpoint convert SRC DST [--to released|cvt_lab]
    python -m cvt_lab.checkpoint export RUN_OR_CKPT [--to safetensors|onnx|transformers] [--out PATH]
"""

from typing import Any

from cvt_lab.checkpoint.formats import (
    HF_WEIGHT_FILES,
    detect_layout,
    load_state,
    state_dict_of,
    to_cvt_lab,
    to_released,
)
from cvt_lab.checkpoint.load import LoadResult, load_checkpoint

__all__ = ["HF_WEIGHT_FILES", "LoadResult", "convert", "detect_layout", "export", "export_released",
           "load_checkpoint", "load_state", "main", "model_from", "state_dict_of", "to_cvt_lab", "to_released"]

# The exports and the command line sit layers above the formats (they build models, read run directories, parse
# arguments): resolved on first use, so that reading weights (and ``import cvt_lab``) stays light.
# (The exports' module is ``exports``: a submodule named ``export`` would shadow the function of that name.)
_LAZY = {"convert": "exports", "export": "exports", "export_released": "exports", "model_from": "exports",
         "main": "cli"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"cvt_lab.checkpoint.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
