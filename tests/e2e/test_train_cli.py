"""End to end through the real CLI (`python -m cvt_lab`) in a subprocess, where the CLI is the point: its output,
exit codes, signals, concurrent runs (the installed script: test_package.py). What runs the same in-process is in
tests/integration/test_train.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from conftest import QUICK, TINY, cli_env, compose_config, read_results, run_cli, wandb_records

RESULT_KEYS = {"test/acc1", "test/acc5", "val/acc1", "params", "macs", "epochs", "wall_s", "overrides"}
# Synthetic data, 3 epochs of 7 batches: long enough to stop mid-run, short enough for a test.
RESUMABLE = ("data=synthetic", "data.num_samples=256", "recipe.batch_size=32", "recipe.epochs=3",
             "trainer.enable_progress_bar=false")


def test_default_digits_run_writes_results(digits_cli_run):
    run_dir, stdout = digits_cli_run
    results = read_results(run_dir)
    assert RESULT_KEYS <= results.keys()
    assert results["status"] == "finished" and results["model"] == "cvt_tiny" and results["data"] == "digits"
    assert results["epochs"] == 1 and results["steps"] == 3
    assert 0.0 <= results["test/acc1"] <= results["test/acc5"] <= 1.0
    assert results["params"] > 0 and results["macs"] > 0
    assert results["overrides"] == list(QUICK)
    assert results["identity_config"]["model.name"] == "cvt_tiny" and len(results["identity"]) == 16
    assert {"torch", "lightning", "timm", "cvt_lab", "python"} <= results["versions"].keys()
    assert (run_dir / ".hydra" / "config.yaml").is_file()  # the resolved config
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "csv" / "version_0" / "metrics.csv").is_file()
    assert stdout.strip().splitlines()[-1] == f"run directory: {run_dir}"

    # Running the same command in the same directory skips the finished run.
    again = run_cli(*QUICK, run_dir=run_dir)
    assert read_results(run_dir)["wall_s"] == results["wall_s"]
    assert "already finished" in again.stdout + again.stderr


def test_sigterm_ends_the_run_as_interrupted_and_a_rerun_resumes_to_the_uninterrupted_metrics(tmp_path):
    """SIGTERM (what schedulers and shells send): a non-zero exit, one line, a record that says so; the same
    command again resumes from the last checkpoint and ends where an uninterrupted run ends."""
    from cvt_lab.job import run

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    # The uninterrupted reference in-process: the job the CLI runs (cvt_lab.job.run), on one thread as the CLI's
    # (OMP_NUM_THREADS=1), without another interpreter's start-up; the CLI's part is the stopped run and its rerun.
    run(compose_config(*RESUMABLE), straight)
    expected = read_results(straight)

    cmd = [sys.executable, "-m", "cvt_lab", *RESUMABLE, f"hydra.run.dir={stopped}"]
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_epoch = stopped / "checkpoints" / "epoch000.ckpt"
    deadline = time.time() + 240
    while not first_epoch.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    # Lightning only notes the signal and stops at the end of the batch: a checkpoint being written is finished
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, f"the run was not interrupted (exit {proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}"
    assert "error: interrupted by SIGTERM" in err and "Traceback" not in out + err
    record = read_results(stopped)
    assert record["status"] == "failed" and record["error"].startswith("interrupted by SIGTERM")

    run_cli(*RESUMABLE, run_dir=stopped)  # the same command, the same directory
    resumed = read_results(stopped)
    assert resumed["status"] == "finished"
    for key in ("test/acc1", "test/acc5", "val/acc1", "test/loss", "epochs", "steps"):
        assert resumed[key] == pytest.approx(expected[key], abs=1e-6), key


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["model=nope"], "Available options in 'model'", 2),  # Hydra refuses it: bad input too
        (["model.heads=[1,3,4]"], "not divisible", 2),
    ],
)
def test_bad_input_fails_with_one_clear_message(tmp_path, args, message, code):
    proc = run_cli(*args, *QUICK, run_dir=tmp_path, check=False)
    assert proc.returncode == code
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_parallel_runs_get_directories_of_their_own_and_w_and_b_runs_of_their_own(tmp_path):
    """The issue's `for s in 0 1 2; do python -m cvt_lab seed=$s ... & done`, logged to W&B offline as a sweep's
    jobs are: a directory for each seed, each with its own W&B run under the group, name and tags given."""
    logs = [tmp_path / f"seed{s}.log" for s in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "cvt_lab", f"seed={s}", *TINY, f"paths.output_dir={tmp_path}",
                               "logger=wandb", "logger.group=table5-cpu", f"logger.name=seed-{s}",
                               f"logger.tags=[seed-{s}]"],
                              env=cli_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)
             for s, log in enumerate(logs)]
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    assert sorted(read_results(r)["seed"] for r in runs) == [0, 1]
    assert all(read_results(r)["run_dir"] == str(r) for r in runs)
    for run_dir in runs:
        seed = read_results(run_dir)["seed"]
        (offline,) = (run_dir / "wandb").glob("offline-run-*")
        run_record = next(r.run for r in wandb_records(next(offline.glob("*.wandb"))) if r.HasField("run"))
        assert run_record.run_group == "table5-cpu"
        assert run_record.display_name == f"seed-{seed}" and list(run_record.tags) == [f"seed-{seed}"]
    assert all("wandb sync" in log.read_text() for log in logs)  # says how to upload later
