"""The run record: the one contract for ``results.json``, the file that says what a run directory holds.

Every writer and reader of ``results.json`` goes through this module, mostly by way of
:class:`cvt_lab.rundir.RunDir`, which owns the rest of a run directory (its lock, config snapshot, checkpoints).

API::

    RESULTS_FILE = "results.json"
    RunRecord                      # typed dataclass; .to_json() -> flat dict, RunRecord.from_json(dict)
    read_record(run_dir)           # -> RunRecord | None (None: no results.json; an unreadable file gives a
                                   #    record with status "failed" and the reason in .error)
    write_record(run_dir, record)  # atomic: a unique temporary file in run_dir, then os.replace

Names that lived here before and still resolve here: the identity's (``identity_of``, ``differences``,
``checkpoint_id``, ``job_dirname``, ``IDENTITY_GROUPS``, ``NOT_IDENTITY``, ``CALLBACKS_NOT_IDENTITY``: their home
is :mod:`cvt_lab.identity`), the run directory's (``run_lock``, ``mark_failed``, ``OutputDirCheck``,
``LOCK_FILE``: :mod:`cvt_lab.rundir`) and its errors (``RunDirError``, ``RunDirBusy``: :mod:`cvt_lab.errors`).

One run directory holds one run, so one record: an evaluation (``mode=eval``) is a run of its own, in its
own directory (``mode`` is part of the identity, so a directory holding a training run refuses it).

``results.json`` is a flat JSON object. Its keys: ``status`` ("running" | "finished" | "failed"), ``mode``
("train" | "eval" | "predict"), the metrics ``test/acc1``, ``test/acc5``, ``val/acc1``, ``val/acc5``, ``test/loss``
(fractions, not %), for line recognition ``test/cer``, ``test/wer``, ``val/cer``, ``val/wer`` (fractions),
``params``, ``macs``, ``image_size``, ``epochs``, ``steps``, the timings ``wall_s`` and
``startup_s`` (seconds from the job's own start) and ``started_at`` (ISO 8601), ``seed``, ``model``,
``data``, ``recipe``, ``precision``, ``threads``, ``peak_gpu_mem_bytes`` (the GPU memory torch reserved at
its peak; what the pool launcher packs GPUs by), ``checkpoint`` (the path as given), ``experiment``,
``overrides``, ``run_dir``, ``prereg`` (the pre-registration file the run confirms and its sha256),
``torch``, ``versions`` (torch, lightning, timm, cvt_lab, python), ``error``
(failed runs), and the run's identity: ``identity_config``, the resolved config that defines the result (see
:mod:`cvt_lab.identity`), and ``identity``, a hash of it. Unknown keys (a newer
version's) are kept in ``RunRecord.extra`` and written back unchanged.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from cvt_lab.errors import RunDirBusy, RunDirError  # noqa: F401  importable here, as before
from cvt_lab.outcomes import is_count

RESULTS_FILE = "results.json"
# Per-item outcomes of the finished run on its validation and test sets, in the loaders' order (numpy's .npz; the
# arrays and their names: cvt_lab.outcomes): the test-set noise in the reports' intervals (cvt_lab.report.stats).
# Files written before a line recognizer's edit counts existed hold boolean arrays only, and read as they always did.
OUTCOMES_FILE = "outcomes.npz"
Status = Literal["running", "finished", "failed"]
Mode = Literal["train", "eval", "predict"]


def _key(json_key: str) -> Any:
    """A field whose JSON key is not its Python name (``test/acc1``)."""
    return field(default=None, metadata={"json": json_key})


@dataclass
class RunRecord:
    status: Status
    mode: Mode = "train"
    test_acc1: float | None = _key("test/acc1")
    test_acc5: float | None = _key("test/acc5")
    val_acc1: float | None = _key("val/acc1")
    val_acc5: float | None = _key("val/acc5")
    test_loss: float | None = _key("test/loss")
    # line recognition (cvt_lab.htr): character and word error rates, fractions
    test_cer: float | None = _key("test/cer")
    test_wer: float | None = _key("test/wer")
    val_cer: float | None = _key("val/cer")
    val_wer: float | None = _key("val/wer")
    params: int | None = None
    macs: int | None = None
    image_size: int | None = None
    epochs: int | None = None
    steps: int | None = None
    wall_s: float | None = None  # from the job's own start (its process's, for the first job of a process)
    startup_s: float | None = None  # until the first training batch
    started_at: str | None = None
    seed: int | None = None
    model: str | None = None
    data: str | None = None
    recipe: str | None = None
    precision: str | None = None
    threads: int | None = None
    peak_gpu_mem_bytes: int | None = None  # torch.cuda.max_memory_reserved of the run (None: no GPU used)
    checkpoint: str | None = None
    experiment: dict | None = None
    overrides: list[str] = field(default_factory=list)
    run_dir: str = ""
    identity: str | None = None
    identity_config: dict[str, Any] = field(default_factory=dict)
    # the pre-registration the run confirms (experiments/prereg/): {"path": as given, "sha256": of its contents}
    prereg: dict[str, str] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    def to_json(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update({f.metadata.get("json", f.name): getattr(self, f.name) for f in fields(self) if f.name != "extra"})
        out["torch"] = self.versions.get("torch")  # the older flat key
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        data = dict(data)
        kwargs = {f.name: data.pop(f.metadata.get("json", f.name)) for f in fields(cls)
                  if f.name != "extra" and f.metadata.get("json", f.name) in data}
        # null where a list or dict belongs (hand-written, older files): the empty one
        kwargs = {k: v for k, v in kwargs.items() if v is not None or k not in _CONTAINERS}
        torch_version = data.pop("torch", None)
        kwargs.setdefault("status", "failed")
        if not kwargs.get("versions") and torch_version:
            kwargs["versions"] = {"torch": torch_version}
        return cls(**kwargs, extra=data)


_CONTAINERS = frozenset(f.name for f in fields(RunRecord) if f.default_factory is not MISSING)


def read_record(run_dir: str | Path) -> RunRecord | None:
    """The record of ``run_dir``; None when it has none. A file that cannot be parsed (written by hand, a
    full disk) gives a record with status "failed" and the reason, so readers list it instead of crashing."""
    path = Path(run_dir) / RESULTS_FILE
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return RunRecord.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        return RunRecord(status="failed", run_dir=str(run_dir), error=f"unreadable {path}: {e}")


def write_record(run_dir: str | Path, record: RunRecord) -> Path:
    """Write ``run_dir/results.json`` atomically: readers see the old record or the new one, never a part,
    and concurrent writers never share a temporary file."""
    run_dir = Path(run_dir)
    path = run_dir / RESULTS_FILE
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{RESULTS_FILE}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the record from the group
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record.to_json(), indent=2, sort_keys=True, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_outcomes(run_dir: str | Path, outcomes: dict[str, Any]) -> Path | None:
    """Save per-item outcomes (array name -> tensor or array; names from :func:`cvt_lab.outcomes.outcome_key`) as
    ``run_dir/OUTCOMES_FILE``: correctness as booleans, edit and character counts as integers; None if empty."""
    import numpy as np

    arrays = {k: np.asarray(v, dtype=np.int64 if is_count(k) else bool) for k, v in outcomes.items()
              if v is not None and len(v)}
    if not arrays:
        return None
    path = Path(run_dir) / OUTCOMES_FILE
    tmp = path.with_name(f".{OUTCOMES_FILE}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def read_outcomes(run_dir: str | Path) -> dict[str, Any]:
    """The per-item outcome arrays a finished run saved (array name -> bool array, or int array for the counts);
    {} without any."""
    import numpy as np

    path = Path(run_dir) / OUTCOMES_FILE
    try:
        with np.load(path) as data:
            return {k: data[k].astype(np.int64 if is_count(k) else bool) for k in data.files}
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------------------------ helpers


def versions() -> dict[str, str]:
    """The versions that produced a record."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    out = {"torch": torch.__version__, "python": platform.python_version()}
    for package in ("lightning", "timm", "cvt_lab"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def iso_time(timestamp: float) -> str:
    """A ``time.time()`` as local ISO 8601 with its UTC offset (``started_at``)."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="milliseconds")


# Names that moved, resolved on first use so that old imports keep working and reading a record stays light:
# cvt_lab.rundir imports this module, cvt_lab.identity imports the config schemas.
_MOVED = {"LOCK_FILE": "rundir", "run_lock": "rundir", "unwritable": "rundir", "OutputDirCheck": "rundir",
          "mark_failed": "rundir", "IDENTITY_GROUPS": "identity", "NOT_IDENTITY": "identity",
          "CALLBACKS_NOT_IDENTITY": "identity", "identity_of": "identity", "differences": "identity",
          "checkpoint_id": "identity", "job_dirname": "identity", "file_sha256": "identity"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"cvt_lab.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
