"""End to end through the real CLI (`python -m cvt_lab`) in a subprocess where the CLI is the point (its output,
exit codes, signals, the installed script); the rest in-process, reusing the session's runs (conftest)."""

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
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_cli(*RESUMABLE, run_dir=straight)
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


def test_eval_of_a_released_format_checkpoint(digits_cli_run, tmp_path):
    train_dir, _ = digits_cli_run
    trained = read_results(train_dir)

    from cvt_lab.checkpoint import load_checkpoint
    from cvt_lab.job import run
    from cvt_lab.models import create_model

    model = create_model("cvt_tiny", num_classes=10)
    load_checkpoint(model, train_dir / "checkpoints" / "last.ckpt")
    released = tmp_path / "CvT-tiny-32x32-digits.pth"
    export_released(model, released)

    evaluated = run(compose_config("mode=eval", f"checkpoint={released}", "trainer.enable_progress_bar=false"),
                    tmp_path / "eval")
    assert evaluated.mode == "eval" and evaluated.epochs == 0
    assert evaluated.test_acc1 == pytest.approx(trained["test/acc1"])
    assert evaluated.val_acc1 == pytest.approx(trained["val/acc1"])


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
    """The issue's `for s in 0 1 2; do python -m cvt_lab seed=$s ... & done`: a directory for each seed."""
    logs = [tmp_path / f"seed{s}.log" for s in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "cvt_lab", f"seed={s}", *TINY, f"paths.output_dir={tmp_path}"],
                              env=cli_env(), stdout=subprocess.DEVNULL, stderr=log.open("w"))
             for s, log in enumerate(logs)]
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    assert sorted(read_results(r)["seed"] for r in runs) == [0, 1]
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
    from cvt_lab.job import run

    a, b = (run(compose_config(*TINY, "trainer.precision=bf16-mixed"), tmp_path / name) for name in "ab")
    assert a.precision == "bf16-mixed"
    assert a.test_acc1 == b.test_acc1 and a.test_loss == b.test_loss


def test_installed_console_script_runs(tmp_path):
    script = Path(sys.executable).with_name("cvt-lab")
    assert script.is_file()
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert proc.returncode == 0 and "cvt13, cvt21" in proc.stdout


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile's CPU backend (inductor) needs a C++ compiler")
def test_compiled_model_trains_and_its_checkpoint_loads_into_a_plain_model(tmp_path):
    """``model.compile=true`` trains and evaluates under torch.compile (inductor); the checkpoint it writes (compiled
    in place: the keys of an uncompiled model) loads into an uncompiled model, and gives the run's test accuracy
    back. In-process: the CLI's part is the same for every model (test_default_digits_run_writes_results)."""
    from cvt_lab.job import run

    results = run(compose_config(*TINY, "model.compile=true"), tmp_path / "compiled")
    assert results.status == "finished" and results.epochs == 1
    last = tmp_path / "compiled" / "checkpoints" / "last.ckpt"
    evaluated = run(compose_config(*TINY, "mode=eval", f"checkpoint={last}"), tmp_path / "eval")
    assert evaluated.test_acc1 == pytest.approx(results.test_acc1, abs=1e-6)
