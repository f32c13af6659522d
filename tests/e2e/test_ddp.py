"""Data parallelism on CPU (gloo, 2 processes; docs/cluster.md): a run through Lightning's own DDP launcher, and a
SLURM job (srun's 2 tasks simulated by their variables) that gets the requeue signal, dies, and is resumed by
torchrun."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from conftest import cli_env, compose_config, read_results
from hydra.utils import instantiate


TESTS = Path(__file__).resolve().parent
DDP = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true")
# 2 epochs of 4 steps (34 samples a rank, batches of 8, Mixup drops the last); a val/test split of 17 (9 + 8)
RUN = ("data=synthetic", "data.num_samples=68", "recipe.batch_size=8", "recipe.epochs=2", "recipe.mixup=0.8",
       "model.drop_path=[0.1,0.1,0.1]", "trainer.enable_progress_bar=false")
STEP_CHECKPOINTS = ("callbacks.step_checkpoint.every_n_train_steps=2",)  # the newest 2 kept
METRICS = ("test/acc1", "test/acc5", "val/acc1", "val/acc5", "test/loss", "epochs", "steps")


PROBE = "+callbacks.probe={_target_:ddp_probe.Probe}"  # the test-only callback tests/ddp_probe.py


def probe(out: Path, signal_at: int = -1, exit_at: int = -1) -> dict[str, str]:
    """The probe's options: where it writes, the step it sends the requeue signal at, the step it dies at."""
    return {"DDP_PROBE_OUT": str(out), "DDP_PROBE_SIGNAL_AT": str(signal_at), "DDP_PROBE_EXIT_AT": str(exit_at)}


def env(**extra: str) -> dict[str, str]:
    return cli_env(PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])), **extra)


def run(cmd: list[str], run_env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=run_env)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
                    f"--- stderr\n{proc.stderr[-5000:]}")
    return proc


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def steps(out: Path, rank: int) -> dict[int, dict]:
    return {line["step"]: line for line in map(json.loads, (out / f"rank{rank}.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, worker_id) -> Path:
    """One uninterrupted 2-process run through Lightning's DDP launcher (it starts rank 1 with the same command).
    Made once per test session: pytest-xdist workers share it (the first makes it, the others wait for it)."""
    if worker_id == "master":
        root, lock = tmp_path_factory.mktemp("ddp"), nullcontext()
    else:  # the session's directory, above each worker's own
        root = tmp_path_factory.getbasetemp().parent
        lock = FileLock(root / "ddp_straight.lock")
    run_dir = root / "straight"
    with lock:
        if not (run_dir / "results.json").is_file():
            run([sys.executable, "-m", "cvt_lab", *DDP, *RUN, PROBE, *STEP_CHECKPOINTS, f"hydra.run.dir={run_dir}"],
                env(**probe(run_dir / "probe")))
    return run_dir


def test_ranks_train_on_their_own_samples_and_random_streams(straight):
    record = read_results(straight)
    assert record["status"] == "finished" and record["steps"] == 8 and record["epochs"] == 2
    assert (straight / "checkpoints" / "last.ckpt").is_file()
    kept = sorted(p.name for p in (straight / "checkpoints").glob("step*"))
    assert kept == ["step00000006.ckpt", "step00000008.ckpt"]  # every 2 steps, the newest 2
    rank0, rank1 = steps(straight / "probe", 0), steps(straight / "probe", 1)
    assert sorted(rank0) == sorted(rank1) == list(range(8))
    for step in rank0:  # other samples, other augmentation and Mixup, other dropout / drop path draws
        assert rank0[step]["images"] != rank1[step]["images"] and rank0[step]["rng"] != rank1[step]["rng"]
    assert len({line["rng"] for line in rank0.values()}) == 8  # and a stream of its own for every step


def test_metrics_are_gathered_over_the_whole_split(straight):
    """val/test accuracy of the 2-rank run = the final weights evaluated on every sample of the split, once (the
    split of 17 is shared 9 + 8, no sample repeated to even the ranks out)."""
    cfg = compose_config(*RUN)
    model = instantiate(cfg.model).eval()
    state = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    data = instantiate(cfg.data, batch_size=8, image_size=cfg.model.img_size)
    data.setup()
    record = read_results(straight)
    for split, dataset in (("val", data.val_set), ("test", data.test_set)):
        images, labels = dataset.tensors
        assert len(labels) == 17
        with torch.no_grad():
            accuracy = (model(images).argmax(1) == labels).float().mean().item()
        assert record[f"{split}/acc1"] == pytest.approx(accuracy, abs=1e-6), split


def test_requeued_slurm_job_resumes_under_torchrun_to_the_uninterrupted_metrics(straight, tmp_path):
    """srun's 2 tasks (simulated by SLURM's variables) get the requeue signal (SIGUSR1) during step 2: Lightning's
    save and requeue run at the end of that step on both ranks (cvt_lab.callbacks.RequeueBetweenSteps):
    hpc_ckpt_1.ckpt in the run directory, `scontrol requeue <job id>` called (a fake here, which records it). The
    tasks die at step 3, mid-epoch. The requeued job, run here by torchrun in the same directory, resumes from the
    hpc checkpoint and ends with the uninterrupted run's metrics; every step it retrains draws, rank by rank, the
    samples, augmentation and random numbers the uninterrupted run drew."""
    bin_dir, run_dir = tmp_path / "bin", tmp_path / "run"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    cmd = [sys.executable, "-m", "cvt_lab", *DDP, *RUN, *STEP_CHECKPOINTS,
           PROBE, f"hydra.run.dir={run_dir}"]
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "cvt", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
             "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": free_port(),
             "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    killed = probe(tmp_path / "killed", signal_at=2, exit_at=3)
    tasks = [subprocess.Popen(cmd, env=env(**slurm, **killed, SLURM_PROCID=str(r), SLURM_LOCALID=str(r)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    errors = [task.communicate(timeout=300)[1] for task in tasks]
    assert [task.returncode for task in tasks] == [3, 3], errors[0][-3000:]  # the probe's exit, as SLURM kills
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]  # rank 0 only
    assert (run_dir / "hpc_ckpt_1.ckpt").is_file() and read_results(run_dir)["status"] == "running"

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                "cvt_lab", *DDP, *RUN, *STEP_CHECKPOINTS, PROBE, f"hydra.run.dir={run_dir}"]
    proc = run(torchrun, env(**probe(tmp_path / "resumed")))
    assert f"resuming from {run_dir / 'hpc_ckpt_1.ckpt'}" in proc.stdout + proc.stderr
    resumed, expected = read_results(run_dir), read_results(straight)
    for key in METRICS:
        assert resumed[key] == pytest.approx(expected[key], abs=1e-6), key
    for rank in (0, 1):
        again, before = steps(tmp_path / "resumed", rank), steps(straight / "probe", rank)
        assert sorted(again) == list(range(3, 8))
        assert all(again[s] == before[s] for s in again)
