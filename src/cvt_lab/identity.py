"""A run's identity: the resolved config that defines its result, hashed; and the sweep job names made from it.

Two runs with the same identity compute the same thing, so a rerun skips a finished one and resumes an
unfinished one; a directory holding another identity's run is refused. :data:`NOT_IDENTITY` is the one list of
the config keys that do not define a result (how fast it runs, where its files are, what it prints); the
``exclude_keys`` of conf/ (what never names a sweep job) are checked against it by the suite.

API::

    identity_of(cfg)                 # -> (hex hash, {dotted config key: resolved value})
    in_identity(key)                 # whether a dotted config key can change a result
    differences(old, new)            # -> ["key: old -> new", ...] between two records' identity configs
    checkpoint_id(path)              # -> 16 hex digits of a checkpoint's contents (file or directory)
    job_dirname(override_dirname, checkpoint)   # a sweep job's directory name (resolver cvt_lab.job_dirname)
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from cvt_lab.checkpoint.hub import is_hub_spec, spec_id
from cvt_lab.config import trainer_args_set

# The config groups whose resolved values define a run's result; seed, mode and the checkpoint's contents
# come on top. Everything else (the logger, the launcher, the paths, threads, Hydra's settings) never does.
IDENTITY_GROUPS = ("model", "data", "recipe", "trainer", "callbacks")
IDENTITY_KEYS = ("seed", "mode", "checkpoint")

# The keys inside IDENTITY_GROUPS that do not define a result, and the callbacks (conf/callbacks/) that only
# save or log: every other callback (EMA weights, early stopping, a user's own) can change a result, so it
# joins the identity. The default callbacks are all here: default identities have none.
NOT_IDENTITY = frozenset({
    "model.compile", "model.compile_mode", "data.root", "data.download", "data.backend", "data.num_workers",
    "data.eval_batch_size", "trainer.accelerator", "trainer.strategy", "trainer.benchmark",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "callbacks.checkpoint", "callbacks.step_checkpoint", "callbacks.lr_monitor",
})
# The callbacks of NOT_IDENTITY by name (kept importable as cvt_lab.results.CALLBACKS_NOT_IDENTITY).
CALLBACKS_NOT_IDENTITY = frozenset(k.removeprefix("callbacks.") for k in NOT_IDENTITY if k.startswith("callbacks."))

# A key that is part of the identity but never names a job directory as given: the checkpoint's path would
# nest directories, so job_dirname names it by its contents' id instead.
NAMED_BY_CONTENTS = frozenset({"checkpoint"})


def in_identity(key: str) -> bool:
    """Whether the dotted config key ``key`` (an override's key, ``+`` / ``~`` prefixes allowed) can change a
    run's result: inside an identity group or one of seed, mode, checkpoint, and not under :data:`NOT_IDENTITY`."""
    key = key.lstrip("+~")
    parts = key.split(".")
    if parts[0] not in IDENTITY_GROUPS and key not in IDENTITY_KEYS:
        return False
    if key.endswith("._target_") and parts[0] != "callbacks":
        return False
    return not any(".".join(parts[:i]) in NOT_IDENTITY for i in range(1, len(parts) + 1))


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: node}


def identity_of(cfg: Any) -> tuple[str, dict[str, Any]]:
    """The identity of a run: ``(hash, config)``, where ``config`` maps dotted keys to the resolved values that
    define its result (``model.*``, ``data.*``, ``recipe.*``, ``trainer.*`` but :data:`NOT_IDENTITY`, the
    ``_target_`` keys and Trainer arguments left at Lightning's defaults; ``callbacks.*`` but those of
    :data:`NOT_IDENTITY`, ``_target_`` included; ``seed``; ``mode``; ``checkpoint``: the contents' id)."""
    from omegaconf import OmegaConf

    config: dict[str, Any] = {}
    for group in IDENTITY_GROUPS:
        if group == "callbacks":  # those that can change a result; a null entry is left out of the run
            callbacks = cfg.get("callbacks") or {}
            node = {name: OmegaConf.to_container(callbacks[name], resolve=True) for name in callbacks
                    if in_identity(f"callbacks.{name}") and callbacks[name] is not None}
        else:
            node = OmegaConf.to_container(cfg[group], resolve=True)
        if group == "trainer":  # arguments at Lightning's defaults count only once set (identities stay as they were)
            node = trainer_args_set(node)
        config.update(_flatten(node, group))
    config = {k: v for k, v in config.items() if in_identity(k)}
    config.update(seed=cfg.seed, mode=cfg.mode, checkpoint=checkpoint_id(cfg.checkpoint))
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], config


def differences(old: Any, new: Any, show: int = 6) -> list[str]:
    """How ``new``'s identity differs from ``old``'s (two run records), as ``key: old -> new``. Keys only one side
    has (an option added or removed by another cvt_lab version) are not differences; records written before
    identities existed have none."""
    if old.identity is None or new.identity is None or old.identity == new.identity:
        return []
    if not old.identity_config:
        return [f"identity: {old.identity} -> {new.identity}"]
    a, b = old.identity_config, new.identity_config
    changed = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return changed[:show] + ([f"... and {len(changed) - show} more"] if len(changed) > show else [])


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's contents (64 hex digits; a pre-registration's, cvt_lab.report.prereg)."""
    p = Path(path)
    st = p.stat()
    return _file_digest(str(p.resolve()), st.st_size, st.st_mtime_ns)


def checkpoint_id(path: str | Path | None) -> str | None:
    """A checkpoint's identity: the sha256 of its contents (16 hex digits), so the same weights under
    another path are the same input; for a directory (transformers), of its files' names and contents."""
    if path is None or str(path) == "":
        return None
    if is_hub_spec(path):  # named by repository and revision: identified without the network
        return spec_id(str(path))
    p = Path(path).expanduser()
    files = [p] if p.is_file() else sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else []
    if not files:
        return "missing"
    digest = hashlib.sha256()
    for q in files:
        st = q.stat()
        digest.update(f"{q.name if p.is_dir() else ''}:{_file_digest(str(q.resolve()), st.st_size, st.st_mtime_ns)}"
                      .encode())
    return digest.hexdigest()[:16]


# A name longer than this (in bytes) is shortened: most file systems allow 255 bytes per path component, and
# the margin leaves room for the suffixes tools add beside a directory (.tmp, .lock, a W&B run id).
NAME_LIMIT = 200
# Hydra's override_dirname joins `key=value` items with "," (conf/config.yaml's item_sep); a value may hold
# commas itself (model.kv_stride=[1,1,1]), so an item starts only where a key and "=" follow the comma.
_ITEM = re.compile(r",(?=[+~]?[A-Za-z_][\w.@/-]*=)")


def _shortened(component: str) -> str:
    """``component`` if it fits :data:`NAME_LIMIT`, else its readable beginning and a hash of the whole (unique)."""
    if len(component.encode()) <= NAME_LIMIT:
        return component
    tag = hashlib.sha256(component.encode()).hexdigest()[:12]
    head = component.encode()[:NAME_LIMIT - len(tag) - 1].decode(errors="ignore")
    return f"{head}~{tag}"


def job_dirname(override_dirname: str, checkpoint: str | None) -> str:
    """A sweep job's directory name (resolver ``cvt_lab.job_dirname``): its overrides, plus a short id of the
    checkpoint's contents when it has one (the checkpoint's path never names a job: it would nest directories).
    Overrides of callbacks outside the identity (where checkpoints go, how often) leave the name alone; a name
    too long for the file system keeps its readable beginning and ends in a hash of the whole."""
    items = [item for item in _ITEM.split(override_dirname) if item]
    items = [item for item in items
             if not (item.lstrip("+~").startswith("callbacks.") and not in_identity(item.partition("=")[0]))]
    tag = checkpoint_id(checkpoint)
    if tag is not None:
        items.append(f"checkpoint={tag[:8]}")
    return "/".join(_shortened(part) for part in ",".join(items).split("/"))
