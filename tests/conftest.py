"""Shared test fixtures: one torch thread for small models, and the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models run fastest on one thread: on a busy 2-core machine, waking idle OpenMP workers costs
    more per op than they give (several times the wall time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for CLI subprocesses: offline W&B, no API key, one thread per job."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def run_cli(*args: str, run_dir: Path | None = None, module: str = "cvt_lab", check: bool = True,
            timeout: float = 300, **popen_kwargs) -> subprocess.CompletedProcess:
    """``python -m cvt_lab ARGS`` (with ``hydra.run.dir=run_dir``); fails the test with its output if it fails."""
    cmd = [sys.executable, "-m", module, *args]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=cli_env(), **popen_kwargs)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
                    f"--- stderr\n{proc.stderr[-5000:]}")
    return proc


def read_results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


# Quick runs are config (conf/debug/): a few batches of the default digits run, or one epoch of two batches of
# synthetic data for tests that train in-process.
QUICK = ("debug=quick",)
TINY = ("debug=tiny",)


def compose_config(*overrides: str, hydra: bool = False):
    """The app's config for ``overrides``, as the task gets it (:func:`cvt_lab.compose.compose`)."""
    from cvt_lab.compose import compose

    return compose(*overrides, hydra=hydra)


def shared_dir(tmp_path_factory, worker_id: str, name: str, make) -> Path:
    """A directory made once per test session by ``make(path)`` and shared by every xdist worker (the first makes
    it under a lock, the others wait for it and reuse it). Tests must not modify it: copy it first."""
    from contextlib import nullcontext

    from filelock import FileLock

    if worker_id == "master":
        root, lock = tmp_path_factory.getbasetemp(), nullcontext()
    else:  # the session's directory, above each worker's own
        root = tmp_path_factory.getbasetemp().parent
        lock = FileLock(root / f"{name}.lock")
    path = root / name
    with lock:
        if not (path / ".made").is_file():
            make(path)
            (path / ".made").touch()
    return path


def _tiny_run(path: Path) -> None:
    from cvt_lab.job import run

    assert run(compose_config(*TINY), path, overrides=list(TINY)).status == "finished"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, worker_id) -> Path:
    """A finished ``debug=tiny`` run (in-process; cvt_tiny at 32 px, 10 synthetic classes): its directory."""
    return shared_dir(tmp_path_factory, worker_id, "tiny_run", _tiny_run)


@pytest.fixture(scope="session")
def digits_cli_run(tmp_path_factory, worker_id) -> tuple[Path, str]:
    """The default run (``debug=quick``) through the real CLI in a subprocess: its directory and stdout."""
    def make(path: Path) -> None:
        proc = run_cli(*QUICK, run_dir=path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "stdout.txt").write_text(proc.stdout)

    path = shared_dir(tmp_path_factory, worker_id, "digits_cli_run", make)
    return path, (path / "stdout.txt").read_text()
