"""The run directory: the one owner of its layout, its record, its lock and its checkpoints.

A run directory holds one run::

    results.json               the record (cvt_lab.results: RunRecord)
    outcomes.npz               each test and validation item's outcome: an image's top-1 correctness, a line's
                               exact match and character edits (a finished run of one process)
    .lock                      held (flock) by the process that owns the run, with its pid
    .hydra/config.yaml         the config snapshot (and hydra.yaml, overrides.yaml), written once the run owns it
    checkpoints/last.ckpt      the newest epoch's weights (and epochNNN.ckpt, stepNNNNNNNN.ckpt beside it)
    hpc_ckpt_N.ckpt            Lightning's checkpoint on SLURM's requeue signal

Everything else (train, predict, export, plan, the launcher, the report) asks :class:`RunDir` where things are.
A record that says "running" while nobody holds the lock is a run that was killed before it could record its
end: :meth:`RunDir.record` reports it as failed (the file is left as it is until the run is rerun).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from cvt_lab.errors import EXIT_BAD_INPUT, JobError, RunDirBusy, RunDirError
from cvt_lab.results import (OUTCOMES_FILE, RESULTS_FILE, RunRecord, read_outcomes, read_record, write_outcomes,
                             write_record)

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CONFIG_DIR = ".hydra"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = f"{CHECKPOINT_DIR}/last.ckpt"
HPC_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # Lightning's name (SLURMEnvironment's requeue), in the run directory itself
# What a killed run's record says once it is found (the process that owned it can no longer write it).
KILLED = "the run's process ended without recording its end (killed, or the machine went down); rerun to resume"


def unwritable(run_dir: Path, error: OSError) -> str:
    return (f"cannot write in {run_dir}: {error.strerror or error}; give a writable output directory "
            "(paths.output_dir=..., or hydra.run.dir=... / hydra.sweep.dir=...)")


def is_readable_checkpoint(path: Path) -> bool:
    """A complete checkpoint file: torch.save writes a zip archive, whose directory and checksums a file cut
    short (a kill while it was written) fails."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


@dataclass(frozen=True)
class RunDir:
    """One run directory (see the module docstring for its layout)."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------------------------------ layout
    @property
    def results_file(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def outcomes_file(self) -> Path:
        return self.path / OUTCOMES_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.path / LAST_CHECKPOINT

    # ------------------------------------------------------------------------------------------ record
    def read_record(self) -> RunRecord | None:
        """The record as written (None: none yet)."""
        return read_record(self.path)

    def write_record(self, record: RunRecord) -> Path:
        return write_record(self.path, record)

    def write_outcomes(self, outcomes: dict[str, Any]) -> Path | None:
        return write_outcomes(self.path, outcomes)

    def read_outcomes(self) -> dict[str, Any]:
        return read_outcomes(self.path)

    def record(self) -> RunRecord | None:
        """The record as a reader should see it: one that says "running" while nobody owns the directory is a
        run that was killed, and reads as failed with :data:`KILLED`."""
        record = self.read_record()
        if record is not None and record.status == "running" and not self.is_locked():
            record.status, record.error = "failed", record.error or KILLED
        return record

    def save_config(self, cfg: Any, hydra_cfg: Any | None = None) -> None:
        """The ``.hydra/`` snapshot: the job's config, and Hydra's (hydra.yaml, overrides.yaml) when given."""
        from omegaconf import OmegaConf

        out = self.path / CONFIG_DIR
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, out / "config.yaml")
        if hydra_cfg is not None:
            OmegaConf.save(hydra_cfg, out / "hydra.yaml")
            OmegaConf.save(hydra_cfg.hydra.overrides.task, out / "overrides.yaml")

    # ------------------------------------------------------------------------------------------ lock
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Own the directory for the duration: an exclusive ``flock`` on ``.lock``, released when the owner ends,
        however it ends (a killed process too). A second owner gets :class:`RunDirBusy`, a directory that cannot
        be written :class:`RunDirError`."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(unwritable(self.path, e)) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise RunDirBusy(f"{self.path} is in use by another run (pid {owner}); wait for it to end, or give "
                                 "this run its own directory (drop hydra.run.dir, or another paths.output_dir)"
                                 ) from None
            except OSError as e:  # a file system without locks (some network mounts): run unlocked
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    def is_locked(self) -> bool:
        """Whether a process owns the directory now (holds its lock). A directory without a lock file, or on a file
        system without locks, counts as not owned."""
        try:
            fd = os.open(self.lock_file, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # closing releases a shared lock taken just to test

    # ------------------------------------------------------------------------------------------ checkpoints
    def checkpoints(self) -> list[Path]:
        """Every checkpoint of the run, newest first; last.ckpt first among those written together (it is written
        after its epoch's checkpoint)."""
        found = [*self.checkpoint_dir.glob("*.ckpt"), *self.path.glob(HPC_CHECKPOINTS)]
        return sorted(found, key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt"), reverse=True)

    def has_checkpoints(self) -> bool:
        return any(self.checkpoint_dir.glob("*.ckpt")) or any(self.path.glob(HPC_CHECKPOINTS))

    def newest_readable_checkpoint(self) -> Path | None:
        """The checkpoint a rerun resumes from: the newest readable one (a damaged newest one: the next, with a
        warning); None when there is none; :class:`JobError` when all are damaged."""
        found = self.checkpoints()
        for path in found:
            if is_readable_checkpoint(path):
                if path != found[0]:
                    log.warning("%s cannot be read (cut short?); resuming from %s instead", found[0], path)
                return path
        if found:
            raise JobError(f"no readable checkpoint in {self.path} ({', '.join(p.name for p in found)} are damaged): "
                           "delete them to start this run afresh, or continue from another with resume=PATH")
        return None

    def prune_hpc_checkpoints(self, keep: Path | None) -> list[Path]:
        """Delete the requeue checkpoints (``hpc_ckpt_N.ckpt``) but ``keep`` (the one the run resumes from):
        Lightning writes a new one on every requeue and never deletes the old, and the run's own checkpoints
        hold everything they hold once it resumed. Returns those deleted."""
        gone = [p for p in self.path.glob(HPC_CHECKPOINTS) if keep is None or p.resolve() != Path(keep).resolve()]
        for path in gone:
            path.unlink(missing_ok=True)
        return gone

    def weights(self) -> Path:
        """The file that stands for this run's weights: its last checkpoint."""
        return self.last_checkpoint

    # ------------------------------------------------------------------------------------------ failures
    def mark_failed(self, error: str, overrides: list[str] | None = None) -> RunRecord | None:
        """Record that the job failed without recording it itself (its process was killed or crashed): its record
        becomes "failed" with ``error``, keeping what it knew (identity, start). A finished record and a directory
        another process owns are left alone; returns the record written, if any."""
        try:
            with self.lock():
                previous = self.read_record()
                if previous is not None and previous.status == "finished":
                    return None
                record = previous or RunRecord(status="failed", run_dir=str(self.path), overrides=list(overrides or []))
                record.status, record.error = "failed", error
                self.write_record(record)
                return record
        except RunDirBusy:
            return None


def checkpoint_file(checkpoint: str | Path) -> Path:
    """``checkpoint=`` as a file: a run directory stands for its last checkpoint."""
    path = Path(checkpoint).expanduser()
    last = RunDir(path).last_checkpoint
    return last if last.is_file() else path


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """:meth:`RunDir.lock` of ``run_dir`` (the name scripts used before RunDir)."""
    with RunDir(run_dir).lock():
        yield


def mark_failed(run_dir: str | Path, error: str, overrides: list[str] | None = None) -> RunRecord | None:
    """:meth:`RunDir.mark_failed` of ``run_dir`` (the pool launcher's crash records)."""
    return RunDir(run_dir).mark_failed(error, overrides)


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
            sys.exit(EXIT_BAD_INPUT)
