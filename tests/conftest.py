"""Shared test fixtures and helpers for tests/unit, tests/integration and tests/e2e (tests/README.md): one torch
thread for small models, the CLI in a subprocess, the session's trained runs, and helpers more than one folder uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow marker is the e2e folder: ``-m "not slow"`` leaves out exactly tests/e2e/. Marked here, not in a
    tests/e2e/conftest.py: a second module named ``conftest`` would shadow this one for ``from conftest import``."""
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.slow)


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


# ---------------------------------------------------------------------------------- helpers of several folders


def wandb_records(path: Path):
    """The protobuf records of an offline W&B run file (a LevelDB-style log: 7-byte file header, 32 KiB
    blocks of chunks with a 7-byte header: crc32, length, type FULL=1/FIRST=2/MIDDLE=3/LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending = path.read_bytes(), 7, b""
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # block trailer padding
            pos += room
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4) and pending:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def fake_checkpoint(path: Path, mtime: float) -> Path:
    """A file that reads as a checkpoint archive (a zip), modified at ``mtime``: what the newest-readable logic sees."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", b"weights")
    os.utime(path, (mtime, mtime))
    return path


def write_job(sweep: Path, axis: str, option: str, seed: int, acc: float | None, error: str | None = None) -> None:
    """A job's results.json in a hand-made Table 7 sweep (finished with ``acc``, or failed with ``error``)."""
    d = sweep / axis.split("/")[0] / f"{axis.split('/')[1]}={option},seed={seed}"
    d.mkdir(parents=True)
    overrides = [f"{axis}={option}", f"seed={seed}", "experiment=ablation_kv_stride"]
    if error:
        r = {"status": "failed", "error": error, "overrides": overrides}
    else:
        r = {"status": "finished", "test/acc1": acc, "seed": seed, "params": 1000, "macs": 10,
             "experiment": {"table": "table7", "row": "${hydra:runtime.choices.model/kv_stride}"},
             "overrides": overrides}
    (d / "results.json").write_text(json.dumps(r))


@pytest.fixture
def no_model_counts(monkeypatch):
    """Reports without building each row's paper-scale model, for tests of verdicts and grouping (the counts are
    unit/test_paper_tables.py's)."""
    monkeypatch.setattr("cvt_lab.report.rows.paper_config_size", lambda spec, row: (None, None))


def exploratory_report(sweep: Path, out: Path, table: str | None = None, **kwargs):
    """cvt_lab.report's report of a hand-made sweep, with no pre-registration (exploratory) unless a test gives one."""
    from cvt_lab.report import report

    kwargs.setdefault("prereg_root", out / "no-prereg")
    return report(sweep, out, table, **kwargs)


def rows_of(paths: dict[str, Path]) -> dict[str, dict]:
    """A report's CSV rows by option."""
    import csv

    with paths["csv"].open() as f:
        return {r["option"]: r for r in csv.DictReader(f)}


def write_prereg(root: Path, table: str, text: str, commit: bool = True) -> Path:
    """A registration ``<root>/<table>.yaml`` holding ``text``, committed to a git repository of its own unless
    ``commit`` is false (the report checks a registration's commit time against its jobs')."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{table}.yaml"
    path.write_text(text)
    if commit:
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        subprocess.run([*git, "add", path.name], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "register"], check=True)
    return path


# transformers picks each stage's drop-path rate as rates[stage] of that stage's blocks, so stage i needs
# more than i blocks: the transformers tests use cvt_tiny with 1/2/3 blocks.
TINY_DEPTHS = [1, 2, 3]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norms and BatchNorm running statistics, so every tensor matters for the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(7)
    return model.eval()


def logits(model: nn.Module, size: int, batch: int = 2) -> torch.Tensor:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    return getattr(out, "logits", out)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hub cache holding REPO (a tiny transformers CvT) at COMMIT as ``main``, in offline mode."""
    pytest.importorskip("transformers")
    from hf_fixtures import COMMIT, REPO, hf_config, hf_model
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / f"models--{REPO.replace('/', '--')}"
    hf = hf_model(repo / "snapshots" / COMMIT, hf_config("cvt_tiny", depths=TINY_DEPTHS))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for name, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", True)):
        monkeypatch.setenv(name, str(int(value)) if value is True else value)
        monkeypatch.setattr(constants, name, value)  # read by huggingface_hub when it is imported
    return hf
