"""The run record: the one contract for ``results.json``, the file that says what a run directory holds.

Every writer and reader of ``results.json`` goes through this module: training and evaluation
(:mod:`cvt_lab.train`), the pool launcher's crash records, the report and the benchmarks.

API::

    RESULTS_FILE = "results.json"
    RunRecord                      # typed dataclass; .to_json() -> flat dict, RunRecord.from_json(dict)
    read_record(run_dir)           # -> RunRecord | None (None: no results.json; an unreadable file gives a
                                   #    record with status "failed" and the reason in .error)
    write_record(run_dir, record)  # atomic: a unique temporary file in run_dir, then os.replace
    run_lock(run_dir)              # context manager: the run owns run_dir; a second owner gets RunDirBusy,
                                   #    a directory that cannot be written RunDirError (its base class)
    identity_of(cfg)               # -> (hex hash, {dotted config key: resolved value})
    differences(old, new)          # -> ["key: old -> new", ...] between two records' identity configs
    checkpoint_id(path)            # -> 16 hex digits of a checkpoint's contents (file or directory)
    mark_failed(run_dir, error)    # a job that died without recording its end (killed, crashed)
    job_dirname, OutputDirCheck    # the sweep job-name resolver and the output-directory Hydra callback

One run directory holds one run, so one record: an evaluation (``mode=eval``) is a run of its own, in its
own directory (``mode`` is part of the identity, so a directory holding a training run refuses it).

``results.json`` is a flat JSON object. Its keys: ``status`` ("running" | "finished" | "failed"), ``mode``
("train" | "eval"), the metrics ``test/acc1``, ``test/acc5``, ``val/acc1``, ``val/acc5``, ``test/loss``
(fractions, not %), for line recognition ``test/cer``, ``test/wer``, ``val/cer``, ``val/wer`` (fractions),
``params``, ``macs``, ``image_size``, ``epochs``, ``steps``, the timings ``wall_s`` and
``startup_s`` (seconds from the job's own start) and ``started_at`` (ISO 8601), ``seed``, ``model``,
``data``, ``recipe``, ``precision``, ``threads``, ``peak_gpu_mem_bytes`` (the GPU memory torch reserved at
its peak; what the pool launcher packs GPUs by), ``checkpoint`` (the path as given), ``experiment``,
``overrides``, ``run_dir``, ``prereg`` (the pre-registration file the run confirms and its sha256),
``torch``, ``versions`` (torch, lightning, timm, cvt_lab, python), ``error``
(failed runs), and the run's identity: ``identity_config``, the resolved config that defines the result (see
:data:`IDENTITY_GROUPS`, :data:`NOT_IDENTITY`), and ``identity``, a hash of it. Unknown keys (a newer
version's) are kept in ``RunRecord.extra`` and written back unchanged.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from hydra.experimental.callback import Callback

RESULTS_FILE = "results.json"
LOCK_FILE = ".lock"
# Per-image top-1 correctness of the finished run on its validation and test sets (numpy's .npz: arrays
# ``val`` and ``test`` of booleans in the loaders' order): the test-set noise in the reports' intervals.
OUTCOMES_FILE = "outcomes.npz"
Status = Literal["running", "finished", "failed"]
Mode = Literal["train", "eval"]

# The config groups whose resolved values define a run's result, and the keys inside them that do not
# (how fast it runs, where its files are, what it prints). seed, mode and the checkpoint's contents come on top.
IDENTITY_GROUPS = ("model", "data", "recipe", "trainer")
NOT_IDENTITY = frozenset({
    "model.compile", "model.compile_mode", "data.root", "data.download", "data.backend", "data.num_workers",
    "data.eval_batch_size", "trainer.accelerator", "trainer.strategy", "trainer.benchmark",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
})
# Callbacks (conf/callbacks/) that only save or log: every other entry (EMA weights, early stopping, a user's
# own) can change a result, so it joins the identity. The defaults are all here: default identities have none.
CALLBACKS_NOT_IDENTITY = frozenset({"checkpoint", "step_checkpoint", "lr_monitor"})


class RunDirError(RuntimeError):
    """The run directory cannot be used: it cannot be written, or another run owns it."""


class RunDirBusy(RunDirError):
    """Another process owns the run directory (it holds its lock)."""


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


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Own ``run_dir`` for the duration: an exclusive ``flock`` on ``run_dir/.lock``, released when the
    owner ends, however it ends (a killed process too). A second owner gets :class:`RunDirBusy`."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunDirError(unwritable(run_dir, e)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RunDirBusy(f"{run_dir} is in use by another run (pid {owner}); wait for it to end, or give this "
                             "run its own directory (drop hydra.run.dir, or another paths.output_dir)") from None
        except OSError as e:  # a file system without locks (some network mounts): run unlocked
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def unwritable(run_dir: Path, error: OSError) -> str:
    return (f"cannot write in {run_dir}: {error.strerror or error}; give a writable output directory "
            "(paths.output_dir=..., or hydra.run.dir=... / hydra.sweep.dir=...)")


class OutputDirCheck(Callback):
    """Hydra callback (conf/config.yaml): an output directory that cannot be written is refused with one
    message and exit code 2 before Hydra creates it and opens its log file there."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._check(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._check(Path(str(config.hydra.sweep.dir)))

    @staticmethod
    def _check(out: Path) -> None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=out).close()
        except OSError as e:
            print(f"error: {unwritable(out, e)}", file=sys.stderr)
            sys.exit(2)


# ---------------------------------------------------------------------------------------------- identity


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: node}


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's contents (64 hex digits)."""
    p = Path(path)
    st = p.stat()
    return _file_digest(str(p.resolve()), st.st_size, st.st_mtime_ns)


def write_outcomes(run_dir: str | Path, outcomes: dict[str, Any]) -> Path | None:
    """Save per-image correctness (split -> bool tensor or array) as ``run_dir/OUTCOMES_FILE``; None if empty."""
    import numpy as np

    arrays = {k: np.asarray(v, dtype=bool) for k, v in outcomes.items() if v is not None and len(v)}
    if not arrays:
        return None
    path = Path(run_dir) / OUTCOMES_FILE
    tmp = path.with_name(f".{OUTCOMES_FILE}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def read_outcomes(run_dir: str | Path) -> dict[str, Any]:
    """The per-image correctness arrays a finished run saved (split -> bool array); {} without any."""
    import numpy as np

    path = Path(run_dir) / OUTCOMES_FILE
    try:
        with np.load(path) as data:
            return {k: data[k].astype(bool) for k in data.files}
    except (OSError, ValueError):
        return {}


def checkpoint_id(path: str | Path | None) -> str | None:
    """A checkpoint's identity: the sha256 of its contents (16 hex digits), so the same weights under
    another path are the same input; for a directory (transformers), of its files' names and contents."""
    if path is None or str(path) == "":
        return None
    from cvt_lab.checkpoint.hub import is_hub_spec, spec_id

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


def job_dirname(override_dirname: str, checkpoint: str | None) -> str:
    """A sweep job's directory name (resolver ``cvt_lab.job_dirname``): its overrides, plus a short id of the
    checkpoint's contents when it has one (the checkpoint's path never names a job: it would nest directories)."""
    tag = checkpoint_id(checkpoint)
    parts = [override_dirname] if override_dirname else []
    if tag is not None:
        parts.append(f"checkpoint={tag[:8]}")
    return ",".join(parts)


def identity_of(cfg: Any) -> tuple[str, dict[str, Any]]:
    """The identity of a run: ``(hash, config)``, where ``config`` maps dotted keys to the resolved values that
    define its result (``model.*``, ``data.*``, ``recipe.*``, ``trainer.*`` but :data:`NOT_IDENTITY`, the
    ``_target_`` keys and Trainer arguments left at Lightning's defaults; ``callbacks.*`` but
    :data:`CALLBACKS_NOT_IDENTITY`; ``seed``; ``mode``; ``checkpoint``: the contents' id). The logger, the
    launcher, the paths, threads and Hydra's settings are not part of it."""
    from omegaconf import OmegaConf

    from cvt_lab.config import trainer_args_set

    config: dict[str, Any] = {}
    for group in IDENTITY_GROUPS:
        node = OmegaConf.to_container(cfg[group], resolve=True)
        if group == "trainer":  # arguments at Lightning's defaults count only once set (identities stay as they were)
            node = trainer_args_set(node)
        config.update(_flatten(node, group))
    config = {k: v for k, v in config.items() if k not in NOT_IDENTITY and not k.endswith("._target_")}
    callbacks = cfg.get("callbacks") or {}
    for name in sorted(set(callbacks) - CALLBACKS_NOT_IDENTITY):
        if callbacks[name] is not None:
            config.update(_flatten(OmegaConf.to_container(callbacks[name], resolve=True), f"callbacks.{name}"))
    config.update(seed=cfg.seed, mode=cfg.mode, checkpoint=checkpoint_id(cfg.checkpoint))
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], config


def differences(old: RunRecord, new: RunRecord, show: int = 6) -> list[str]:
    """How ``new``'s identity differs from ``old``'s, as ``key: old -> new``. Keys only one side has (an
    option added or removed by another cvt_lab version) are not differences; records written before
    identities existed have none."""
    if old.identity is None or new.identity is None or old.identity == new.identity:
        return []
    if not old.identity_config:
        return [f"identity: {old.identity} -> {new.identity}"]
    a, b = old.identity_config, new.identity_config
    changed = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return changed[:show] + ([f"... and {len(changed) - show} more"] if len(changed) > show else [])


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


def mark_failed(run_dir: str | Path, error: str, overrides: list[str] | None = None) -> RunRecord | None:
    """Record that the job of ``run_dir`` failed without recording it itself (its process was killed or
    crashed): its record becomes "failed" with ``error``, keeping what it knew (identity, start). A finished
    record and a directory another process owns are left alone; returns the record written, if any."""
    try:
        with run_lock(run_dir):
            previous = read_record(run_dir)
            if previous is not None and previous.status == "finished":
                return None
            record = previous or RunRecord(status="failed", run_dir=str(run_dir), overrides=list(overrides or []))
            record.status, record.error = "failed", error
            write_record(run_dir, record)
            return record
    except RunDirBusy:
        return None
