"""Lightning conventions: ImageClassifier.load_from_checkpoint rebuilds the model from its saved config;
mode=predict writes the top-k classes of every image under a folder; every Trainer argument is accepted."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import TINY, compose_config, read_results
from hydra.errors import ConfigCompositionException
from PIL import Image

from cvt_lab.module import ImageClassifier
from cvt_lab.job import run


@pytest.fixture
def trained(tiny_run):
    """A tiny run on synthetic data (32 px, 10 classes; the session's, conftest.tiny_run): its directory."""
    return tiny_run


def test_load_from_checkpoint_rebuilds_the_model(trained):
    from cvt_lab.checkpoint import load_checkpoint
    from cvt_lab.models import create_model

    module = ImageClassifier.load_from_checkpoint(trained / "checkpoints" / "last.ckpt")
    reference = create_model("cvt_tiny", num_classes=10).eval()
    load_checkpoint(reference, trained / "checkpoints" / "last.ckpt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(module.eval()(x), reference(x))
    assert module.hparams.num_classes == 10 and module.recipe.name == "cpu"


def test_predict_writes_top_k_per_image(trained, tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / name)
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "predict"
    cfg = compose_config("mode=predict", f"data.root={images}", f"checkpoint={trained}", "data=imagefolder",
                         "data.num_classes=10", "data.num_workers=0", "predict.top_k=3",
                         "trainer.enable_progress_bar=false")
    assert run(cfg, out).status == "finished"
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["path"] for r in rows] == ["a.png", "b.jpg", "sub/c.png"]
    assert list(rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]
    for r in rows:
        probs = [float(r[f"prob_{i}"]) for i in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
        assert len({r[f"class_{i}"] for i in (1, 2, 3)}) == 3
    assert read_results(out)["mode"] == "predict" and read_results(out)["status"] == "finished"


def test_every_trainer_argument_is_accepted_and_a_misspelled_one_refused():
    cfg = compose_config("trainer.val_check_interval=0.5", "trainer.profiler=simple", "trainer.min_epochs=1")
    assert cfg.trainer.val_check_interval == 0.5 and cfg.trainer.profiler == "simple"
    assert cfg.trainer.max_epochs == cfg.recipe.epochs  # our defaults and interpolations stay
    with pytest.raises(ConfigCompositionException, match="val_chek_interval"):
        compose_config("trainer.val_chek_interval=0.5")


def test_trainer_arguments_at_lightning_defaults_leave_the_identity_alone():
    from cvt_lab.identity import identity_of

    default, _ = identity_of(compose_config())
    assert identity_of(compose_config("trainer.inference_mode=true"))[0] == default  # Lightning's default
    changed, config = identity_of(compose_config("trainer.val_check_interval=0.5"))
    assert changed != default and config["trainer.val_check_interval"] == 0.5


def test_trainer_arguments_at_lightning_defaults_leave_lightnings_environment_defaults_working(monkeypatch):
    from hydra.utils import instantiate

    from cvt_lab.building import trainer_node

    node = trainer_node(compose_config("trainer.val_check_interval=0.5"))
    assert node.val_check_interval == 0.5 and "profiler" not in node and node.max_epochs is not None
    monkeypatch.setenv("PL_TRAINER_LIMIT_PREDICT_BATCHES", "3")  # a Lightning default set by the environment
    assert instantiate(node, logger=False, enable_checkpointing=False).limit_predict_batches == 3


def test_trainer_arguments_reach_the_trainer(tmp_path):
    cfg = compose_config(*TINY, "model.img_size=16", "trainer.val_check_interval=0.5", "trainer.profiler=simple")
    assert run(cfg, tmp_path).status == "finished"
    metrics = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    assert sum(bool(m.get("val/acc1")) for m in metrics) == 2  # twice in an epoch of two batches


def test_predict_skips_an_unreadable_image_with_one_line_and_predicts_the_rest(trained, tmp_path, caplog):
    import logging

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / name)
    (images / "b.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")  # cut short
    out = tmp_path / "predict"
    cfg = compose_config("mode=predict", f"data.root={images}", f"checkpoint={trained}", "data=imagefolder",
                         "data.num_classes=10", "data.num_workers=0", "recipe.batch_size=2",
                         "trainer.enable_progress_bar=false")
    with caplog.at_level(logging.WARNING, logger="cvt_lab.predict"):
        assert run(cfg, out).status == "finished"
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["path"] for r in rows] == ["a.png", "c.png"]
    warned = [r.getMessage() for r in caplog.records if "b.jpg" in r.getMessage()]
    assert len(warned) == 1 and "unreadable image" in warned[0] and "\n" not in warned[0]
