"""The three key layouts of CvT weights and how to read them: released ``.pth``, transformers, ours.

* released (``CvT-13-224x224-IN-1k.pth``): ``stage{i}.blocks.{j}.attn.conv_proj_q.conv.weight`` ...
* transformers (``CvtForImageClassification``): ``cvt.encoder.stages.{i}.layers.{j}.attention...``
* ours (:class:`cvt_lab.models.CvT`): the released names with ``stages.{i}.`` for ``stage{i}.``

:func:`load_state` reads any of them from a file, a directory or a Hugging Face Hub repository
(``hf-hub:org/name``); wrappers such as ``state_dict`` / ``model`` and the prefixes ``module.``,
``_orig_mod.`` and Lightning's ``model.`` are removed. :func:`to_cvt_lab` / :func:`to_released` rename.
docs/checkpoints.md lists the layouts and what parity needs.
"""

from __future__ import annotations

import functools
import json
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from cvt_lab.checkpoint import hub

HEAD_KEYS = ("head.weight", "head.bias")
# Files a transformers model directory may hold, in order of preference.
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
# Wrappers around the state dict in released / training checkpoints, outermost first.
WRAPPER_KEYS = ("state_dict", "model", "module")
SHOW = 10  # how many keys an error message lists before summarizing the rest

_HF_QKV = {"query": "q", "key": "k", "value": "v"}
# transformers name -> ours, applied to the whole key (the first matching rule wins).
_HF_RULES = [
    (r"(?:cvt\.)?encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\.projection\.",
     r"stages.\1.patch_embed.proj."),
    (r"(?:cvt\.)?encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\.normalization\.",
     r"stages.\1.patch_embed.norm."),
    (r"(?:cvt\.)?encoder\.stages\.(\d+)\.cls_token$", r"stages.\1.cls_token"),
    (r"(?:cvt\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"layernorm\.", "norm."),
    (r"classifier\.", "head."),
]
_HF_BLOCK_RULES = [
    (r"attention\.attention\.convolution_projection_(query|key|value)\.convolution_projection\.convolution\.",
     lambda m: f"attn.conv_proj_{_HF_QKV[m[1]]}.conv."),
    (r"attention\.attention\.convolution_projection_(query|key|value)\.convolution_projection\.normalization\.",
     lambda m: f"attn.conv_proj_{_HF_QKV[m[1]]}.bn."),
    (r"attention\.attention\.projection_(query|key|value)\.", lambda m: f"attn.proj_{_HF_QKV[m[1]]}."),
    (r"attention\.output\.dense\.", "attn.proj."),
    (r"intermediate\.dense\.", "mlp.fc1."),
    (r"output\.dense\.", "mlp.fc2."),
    (r"layernorm_before\.", "norm1."),
    (r"layernorm_after\.", "norm2."),
]


# ----------------------------------------------------------------------------------------------- reading


class _Inert:
    """Stands in for any object in a pickle that is not a tensor or a container (e.g. the OmegaConf
    hyper-parameters in a Lightning checkpoint): it accepts everything and does nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass


class _TensorsOnlyUnpickler(pickle.Unpickler):
    """Resolves only what ``torch.load(weights_only=True)`` allows; every other global becomes
    :class:`_Inert`, so no code named by the file runs."""

    def find_class(self, module: str, name: str):
        return _allowed_globals().get(f"{module}.{name}", _Inert)


@functools.cache
def _allowed_globals() -> dict:
    from torch._weights_only_unpickler import _get_allowed_globals

    return _get_allowed_globals()


class _TensorsOnlyPickle:
    """A ``pickle_module`` for :func:`torch.load` built on :class:`_TensorsOnlyUnpickler`."""

    Unpickler = _TensorsOnlyUnpickler

    @staticmethod
    def load(file, **kwargs):
        return _TensorsOnlyUnpickler(file, **kwargs).load()


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Training checkpoints carry hyper-parameter objects that weights_only refuses; read the tensors
        # and replace those objects by inert placeholders instead of executing anything from the file.
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TensorsOnlyPickle)


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _read_file(path: Path):
    if path.suffix == ".json":  # a sharded transformers checkpoint: read every shard of the index
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in _read_file(path.parent / shard).items()}
    if _is_safetensors(path):
        from safetensors.torch import load_file

        return load_file(path)
    return _torch_load(path)


def _resolve(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"cvt_lab: checkpoint {path} does not exist")
    if not path.is_dir():
        return path
    for name in HF_WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    found = sorted(p.name for p in path.iterdir() if p.suffix in (".pth", ".pt", ".ckpt", ".bin", ".safetensors"))
    if len(found) == 1:
        return path / found[0]
    raise FileNotFoundError(f"cvt_lab: checkpoint directory {path} holds none of {', '.join(HF_WEIGHT_FILES)}"
                            + (f" and several candidate files ({', '.join(found)}); name one" if found else ""))


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj):
    """The state dict inside a checkpoint dict (``state_dict`` / ``model`` / ``module`` wrappers)."""
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):  # e.g. a whole pickled model, which is never unpickled here
        raise ValueError("holds no state dict (a whole pickled model?); save model.state_dict() instead")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"holds no tensors (top-level keys: {_listing(list(obj))})")
    return tensors


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` (DDP), ``_orig_mod.`` (torch.compile, at any depth) and Lightning's ``model.``
    (keeping only the model's keys when the LightningModule holds other modules too)."""
    state = {re.sub(r"^module\.", "", k).replace("_orig_mod.", ""): v for k, v in state.items()}
    if any(k.startswith("model.") for k in state) and not any(
        k.startswith(("stages.", "stage0.", "cvt.", "encoder.", "head.", "norm.")) for k in state
    ):
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return state


def state_dict_of(obj) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint object, wrappers and training prefixes removed (any layout)."""
    return _strip_prefixes(_unwrap(obj))


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file or directory, or of a Hub repository (``hf-hub:org/name[@revision]``,
    see :mod:`cvt_lab.checkpoint.hub`), with wrappers and training prefixes removed, keys still in the
    checkpoint's own layout (released, transformers or ours; see :func:`to_cvt_lab`)."""
    path = hub.download(path) if hub.is_hub_spec(path) else Path(path)
    file = _resolve(path)
    try:
        return state_dict_of(_read_file(file))
    except (FileNotFoundError, IsADirectoryError):
        raise
    except Exception as e:  # corrupt, truncated, or not a checkpoint at all
        raise ValueError(f"cvt_lab: cannot read checkpoint {file}: {type(e).__name__}: {e}") from e


def _listing(items: list, show: int = SHOW) -> str:
    shown = ", ".join(map(str, items[:show]))
    return shown + (f", ... and {len(items) - show} more" if len(items) > show else "")



# ---------------------------------------------------------------------------------------------- renaming


def _apply(rules, key: str) -> tuple[str, str] | None:
    """(renamed prefix, rest of the key) for the first rule matching the start of ``key``."""
    for pattern, repl in rules:
        m = re.match(pattern, key)
        if m:
            return (repl(m) if callable(repl) else m.expand(repl)), key[m.end():]
    return None


def _from_transformers(key: str) -> str:
    hit = _apply(_HF_RULES, key)
    if hit is None:
        return key  # not a CvT key: left as it is, so it shows up as unexpected
    prefix, rest = hit
    if ".blocks." in prefix:
        block = _apply(_HF_BLOCK_RULES, rest)
        if block is not None:
            return prefix + "".join(block)
    return prefix + rest


def detect_layout(state: Iterable[str]) -> str:
    """``"transformers"``, ``"released"`` or ``"cvt_lab"``, from the keys."""
    keys = list(state)
    if any(re.match(r"(?:cvt\.)?encoder\.stages\.\d+\.", k) for k in keys):
        return "transformers"
    if any(re.match(r"stage\d+\.", k) for k in keys):
        return "released"
    return "cvt_lab"


def to_cvt_lab(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename released (``stage{i}.``) or transformers keys to ours (``stages.{i}.``); ours pass through."""
    layout = detect_layout(state)
    if layout == "transformers":
        return {_from_transformers(k): v for k, v in state.items()}
    if layout == "released":
        return {re.sub(r"^stage(\d+)\.", r"stages.\1.", k): v for k, v in state.items()}
    return dict(state)


def to_released(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename any layout to the released one (``stage{i}.``)."""
    return {re.sub(r"^stages\.(\d+)\.", r"stage\1.", k): v for k, v in to_cvt_lab(state).items()}
