"""End to end through the real CLI (`python -m cvt_lab`) in a subprocess, plus the training pieces in-process."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import QUICK, TINY, cli_env, compose_config, read_results, run_cli

from cvt_lab.checkpoint import export_released

pytestmark = pytest.mark.slow
RESULT_KEYS = {"test/acc1", "test/acc5", "val/acc1", "params", "macs", "epochs", "wall_s", "overrides"}
# Synthetic data, 4 epochs of 32 batches: long enough to kill mid-run, short enough for a test.
RESUMABLE = ("data=synthetic", "data.num_samples=1024", "recipe.batch_size=32", "recipe.epochs=4",
             "trainer.enable_progress_bar=false")


def test_default_digits_run_writes_results(tmp_path):
    proc = run_cli(*QUICK, run_dir=tmp_path)
    results = read_results(tmp_path)
    assert RESULT_KEYS <= results.keys()
    assert results["status"] == "finished" and results["model"] == "cvt_tiny" and results["data"] == "digits"
    assert results["epochs"] == 1 and results["steps"] == 3
    assert 0.0 <= results["test/acc1"] <= results["test/acc5"] <= 1.0
    assert results["params"] > 0 and results["macs"] > 0
    assert results["overrides"] == list(QUICK)
    assert results["identity_config"]["model.name"] == "cvt_tiny" and len(results["identity"]) == 16
    assert {"torch", "lightning", "timm", "cvt_lab", "python"} <= results["versions"].keys()
    assert (tmp_path / ".hydra" / "config.yaml").is_file()  # the resolved config
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file()
    assert proc.stdout.strip().splitlines()[-1] == f"run directory: {tmp_path}"

    # Running the same command in the same directory skips the finished run.
    again = run_cli(*QUICK, run_dir=tmp_path)
    assert read_results(tmp_path)["wall_s"] == results["wall_s"]
    assert "already finished" in again.stdout + again.stderr


def test_killed_run_resumes_to_the_uninterrupted_metrics(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_cli(*RESUMABLE, run_dir=straight)
    expected = read_results(straight)

    cmd = [sys.executable, "-m", "cvt_lab", *RESUMABLE, f"hydra.run.dir={killed}"]
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_epoch = killed / "checkpoints" / "epoch000.ckpt"
    deadline = time.time() + 240
    while not first_epoch.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # let the checkpoint finish writing, then kill mid-training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert read_results(killed)["status"] == "running"

    run_cli(*RESUMABLE, run_dir=killed)  # the same command, the same directory
    resumed = read_results(killed)
    for key in ("test/acc1", "test/acc5", "val/acc1", "test/loss", "epochs", "steps"):
        assert resumed[key] == pytest.approx(expected[key], abs=1e-6), key


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


def test_wandb_offline_writes_run_with_group_and_name(tmp_path):
    args = ("logger=wandb", "logger.group=table5-cpu", "logger.name=row-c", "logger.tags=[row-c]", *QUICK)
    proc = run_cli(*args, run_dir=tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, proc.stderr
    run_record = next(r.run for r in wandb_records(next(runs[0].glob("*.wandb"))) if r.HasField("run"))
    assert run_record is not None
    assert run_record.run_group == "table5-cpu"
    assert run_record.display_name == "row-c"
    assert list(run_record.tags) == ["row-c"]
    assert "wandb sync" in proc.stderr + proc.stdout  # says how to upload later


def test_eval_of_a_released_format_checkpoint(tmp_path):
    train_dir = tmp_path / "train"
    run_cli(*QUICK, run_dir=train_dir)
    trained = read_results(train_dir)

    from cvt_lab.checkpoint import load_checkpoint
    from cvt_lab.models import create_model

    model = create_model("cvt_tiny", num_classes=10)
    load_checkpoint(model, train_dir / "checkpoints" / "last.ckpt")
    released = tmp_path / "CvT-tiny-32x32-digits.pth"
    export_released(model, released)

    eval_dir = tmp_path / "eval"
    run_cli("mode=eval", f"checkpoint={released}", "trainer.enable_progress_bar=false", run_dir=eval_dir)
    evaluated = read_results(eval_dir)
    assert evaluated["mode"] == "eval" and evaluated["epochs"] == 0
    assert evaluated["test/acc1"] == pytest.approx(trained["test/acc1"])
    assert evaluated["val/acc1"] == pytest.approx(trained["val/acc1"])


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


def offline(*args, **kwargs):
    from urllib.error import URLError

    raise URLError(OSError(-3, "Temporary failure in name resolution"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model.dims=[32,64]"], "model: CvT: `dims` has 2 entries but the model has 3 stages"),
        (["model.heads=[1,3,4]"], "model: CvT: stage 1 width 64 is not divisible by its 3 heads"),
        (["model.proj=[dw_bn,conv,linear]"], "valid choices are"),
        pytest.param(["trainer=gpu"], "needs a CUDA GPU and torch finds none here: use trainer=cpu",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
        (["recipe.epochs=-3"], "recipe.epochs=-3: give at least 1"),
        (["trainer.precision=fp8"], "trainer: Precision 'fp8' is invalid"),
        (["threads=-2"], "threads=-2: give a number of torch threads"),
        (["resume={bad}"], "resume={bad}: cannot read this checkpoint"),
        (["mode=eval", "checkpoint={bad}"], "cannot read checkpoint {bad}"),
        (["data=imagefolder", "data.root=/nonexistent/imagenet"], "Expected ImageNet layout"),
        (["data=cifar10", "data.download=true", "data.root={tmp}/cifar10", "data.num_workers=0"],
         "cannot download the dataset ([Errno -3] Temporary failure in name resolution): data.download=true"),
        (["mode=eval"], "checkpoint=PATH"),
        (["logger.kind=mlflow"], "valid choices are csv, tensorboard, wandb"),
    ],
)
def test_bad_input_is_one_message_and_recorded(tmp_path, monkeypatch, args, message):
    """Each bad input of issue 10's list is one JobError (exit code 2 in the CLI, see above), with the errors of
    objects being built unwrapped from Hydra's InstantiationException; the run's record says why it failed."""
    import urllib.request

    from cvt_lab.errors import JobError
    from cvt_lab.job import run

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # tests never touch the network
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    fill = {"bad": bad, "tmp": tmp_path}
    with pytest.raises(JobError) as failed:
        run(compose_config(*TINY, *(a.format(**fill) for a in args)), tmp_path / "run")
    assert message.format(**fill) in str(failed.value) and "\n" not in str(failed.value)
    record = read_results(tmp_path / "run")
    assert record["status"] == "failed" and record["error"] == str(failed.value)


def test_convert_to_an_unwritable_path_is_one_message(tmp_path, capsys):
    from cvt_lab.checkpoint import main
    from cvt_lab.models import create_model

    src = export_released(create_model("cvt_tiny", num_classes=10), tmp_path / "tiny.pth")
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    assert main(["convert", str(src), str(blocked / "out.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {blocked / 'out.pth'}") and len(err.strip().splitlines()) == 1


def test_parallel_runs_get_directories_of_their_own(tmp_path):
    """The issue's `for s in 0 1 2; do python -m cvt_lab seed=$s ... & done`: three directories, three seeds."""
    logs = [tmp_path / f"seed{s}.log" for s in range(3)]
    procs = [subprocess.Popen([sys.executable, "-m", "cvt_lab", f"seed={s}", *TINY, f"paths.output_dir={tmp_path}"],
                              env=cli_env(), stdout=subprocess.DEVNULL, stderr=log.open("w"))
             for s, log in enumerate(logs)]
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 3
    assert sorted(read_results(r)["seed"] for r in runs) == [0, 1, 2]
    assert all(read_results(r)["run_dir"] == str(r) for r in runs)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from cvt_lab.models.cvt import CvT
    from cvt_lab.module import ImageClassifier
    from cvt_lab.errors import JobError
    from cvt_lab.job import run

    forward = CvT.forward

    def forward_nan_once_poisoned(self, x):  # logits turn NaN from epoch 1 on
        out = forward(self, x)
        return out * float("nan") if self.training and getattr(self, "poisoned", False) else out

    monkeypatch.setattr(CvT, "forward", forward_nan_once_poisoned)
    monkeypatch.setattr(ImageClassifier, "on_train_epoch_end", lambda self: setattr(self.model, "poisoned", True))
    cfg = compose_config(*RESUMABLE, "recipe.epochs=3", "data.num_samples=64")
    with pytest.raises(JobError, match="loss is nan at epoch 1.*last good checkpoint is kept.*new run directory"):
        run(cfg, tmp_path, overrides=[])
    last = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert read_results(tmp_path)["status"] == "failed" and "loss is nan" in read_results(tmp_path)["error"]


def test_same_seed_same_metrics_and_precision_override(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_cli(*QUICK, "trainer.precision=bf16-mixed", run_dir=a)
    run_cli(*QUICK, "trainer.precision=bf16-mixed", run_dir=b)
    ra, rb = read_results(a), read_results(b)
    assert ra["precision"] == "bf16-mixed"
    assert ra["test/acc1"] == rb["test/acc1"] and ra["test/loss"] == rb["test/loss"]


def test_installed_console_script_runs(tmp_path):
    script = Path(sys.executable).with_name("cvt-lab")
    assert script.is_file()
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert proc.returncode == 0 and "cvt13, cvt21" in proc.stdout


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile's CPU backend (inductor) needs a C++ compiler")
def test_compiled_model_trains_and_its_checkpoint_loads_into_a_plain_model(tmp_path):
    """``model.compile=true`` trains and evaluates under torch.compile; the checkpoint it writes (compiled in
    place: the keys of an uncompiled model) loads into an uncompiled model, and gives the run's test accuracy back."""
    run_cli(*QUICK, "model.compile=true", run_dir=tmp_path, timeout=900)
    results = read_results(tmp_path)
    assert results["status"] == "finished" and results["epochs"] == 1

    evaluated = tmp_path / "eval"
    run_cli("mode=eval", f"checkpoint={tmp_path / 'checkpoints' / 'last.ckpt'}", "trainer.enable_progress_bar=false",
            run_dir=evaluated)
    assert read_results(evaluated)["test/acc1"] == pytest.approx(results["test/acc1"], abs=1e-6)
