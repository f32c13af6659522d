"""The job in-process (cvt_lab.job.run), as the CLI runs it: evaluation of a released-format checkpoint, each bad
input as one recorded message, a NaN loss, seeds and precision, a compiled model. The CLI itself (exit codes,
signals, concurrent runs) is tests/e2e/test_train_cli.py."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import TINY, compose_config, read_results

from cvt_lab.checkpoint import export_released


def test_eval_of_a_released_format_checkpoint(tiny_run, tmp_path):
    """The session's in-process tiny run, exported to the released format and evaluated on the same (synthetic)
    splits: the run's own accuracies back."""
    train_dir = tiny_run
    trained = read_results(train_dir)

    from cvt_lab.checkpoint import load_checkpoint
    from cvt_lab.job import run
    from cvt_lab.models import create_model

    model = create_model("cvt_tiny", num_classes=10)
    load_checkpoint(model, train_dir / "checkpoints" / "last.ckpt")
    released = tmp_path / "CvT-tiny-32x32-synthetic.pth"
    export_released(model, released)

    evaluated = run(compose_config(*TINY, "mode=eval", f"checkpoint={released}"), tmp_path / "eval")
    assert evaluated.mode == "eval" and evaluated.epochs == 0
    assert evaluated.test_acc1 == pytest.approx(trained["test/acc1"])
    assert evaluated.val_acc1 == pytest.approx(trained["val/acc1"])


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
    cfg = compose_config("data=synthetic", "data.num_samples=64", "recipe.batch_size=32", "recipe.epochs=3",
                         "trainer.enable_progress_bar=false")
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
