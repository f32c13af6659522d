"""``python -m cvt_lab.checkpoint export RUN_OR_CKPT --to safetensors|onnx|transformers``: from a run directory
(its config and last.ckpt) or a checkpoint file; ONNX with a dynamic batch checked with onnxruntime; a
transformers directory that ``CvtForImageClassification.from_pretrained`` loads to our logits (act=gelu) or to
logits off by the GELU difference, with a warning (act=quick_gelu); refusals as one message, exit 2."""

from __future__ import annotations

import json
import logging
import os
import re
import stat

import pytest
import torch
from conftest import TINY_DEPTHS, logits, randomize
from omegaconf import OmegaConf

from cvt_lab import create_model
from cvt_lab.checkpoint import export_released, main, model_from
from cvt_lab.models import load_preset

transformers = pytest.importorskip("transformers")

# One stage with every CvT part (convolutional embedding, dw_bn projections, class token): a quick ONNX export.
ONE_STAGE = dict(depths=[1], dims=[32], heads=[1], embed_type="conv", embed_kernel=7, embed_stride=4, embed_padding=2,
                 proj="dw_bn", proj_kernel=3, q_stride=1, kv_stride=2, pos_embed=False, cls_token=True, mlp_ratio=4.0,
                 qkv_bias=True, drop_path=0.0)


def make_run(run_dir, **overrides):
    """A run directory as training leaves it: .hydra/config.yaml and a Lightning checkpoints/last.ckpt."""
    torch.manual_seed(0)
    model = randomize(create_model("cvt_tiny", num_classes=10, **overrides))
    args = {**load_preset("cvt_tiny"), **overrides, "num_classes": "${data.num_classes}"}
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save({"model": {"_target_": "cvt_lab.models.build_cvt", **args}, "data": {"num_classes": 10}},
                   run_dir / ".hydra" / "config.yaml")
    (run_dir / "checkpoints").mkdir()
    torch.save({"epoch": 1, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               run_dir / "checkpoints" / "last.ckpt")
    return model


def max_diff(out: str) -> float:
    return float(re.search(r"max \|diff\| of its logits from PyTorch's: (\S+)", out)[1])


def test_onnx_dynamic_batch(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    make_run(tmp_path / "run", **ONE_STAGE)
    assert main(["export", str(tmp_path / "run"), "--to", "onnx"]) == 0
    out = capsys.readouterr().out
    assert max_diff(out) < 1e-4  # onnxruntime vs PyTorch on a batch of 3, traced with 2
    graph = onnx.load(tmp_path / "run" / "export" / "model.onnx").graph
    (images,) = graph.input
    assert images.name == "images" and images.type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert [d.dim_value for d in images.type.tensor_type.shape.dim[1:]] == [3, 32, 32]


def test_safetensors_default_and_self_describing(tmp_path, capsys):
    source = make_run(tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"  # inside a run: its config says the model
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "m.safetensors")]) == 0
    assert "wrote" in capsys.readouterr().out
    from safetensors import safe_open

    with safe_open(tmp_path / "m.safetensors", "pt") as f:
        args = json.loads(f.metadata()["cvt_lab.model"])
    assert args["name"] == "cvt_tiny" and args["num_classes"] == 10 and args["act"] == "quick_gelu"
    rebuilt = model_from(tmp_path / "m.safetensors")  # no run directory, no --model: the metadata says it
    assert torch.equal(logits(rebuilt, 32), logits(source, 32))
    assert main(["export", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "export" / "model.safetensors").is_file()


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_transformers_directory(tmp_path, capsys, caplog, act):
    source = make_run(tmp_path / "run", depths=TINY_DEPTHS, act=act)
    with caplog.at_level(logging.WARNING, logger="cvt_lab.checkpoint"):
        assert main(["export", str(tmp_path / "run"), "--to", "transformers", "--out", str(tmp_path / "hf")]) == 0
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "hf").iterdir()}
    hf = transformers.CvtForImageClassification.from_pretrained(tmp_path / "hf").eval()
    diff = (logits(hf, 32) - logits(source, 32)).abs().max().item()
    assert diff == pytest.approx(max_diff(capsys.readouterr().out), rel=1e-3, abs=1e-6)
    warned = any("erf GELU" in r.getMessage() for r in caplog.records)
    if act == "gelu":  # transformers computes the erf GELU: the same logits
        assert diff < 1e-4 and not warned
    else:  # the released QuickGELU: close, not equal, and said so
        assert 1e-4 < diff < 0.1 and warned


def test_released_checkpoint_needs_its_preset(tmp_path, capsys):
    torch.manual_seed(0)
    path = export_released(create_model("cvt_tiny", num_classes=10), tmp_path / "CvT-tiny.pth")
    assert main(["export", str(path)]) == 2
    assert "--model cvt13" in capsys.readouterr().err
    assert main(["export", str(path), "--model", "cvt_tiny"]) == 0
    assert (tmp_path / "CvT-tiny.safetensors").is_file()


@pytest.mark.parametrize("overrides, problem", [
    (dict(depths=[1, 1, 2]), "depths=[1, 1, 2]"),
    (dict(depths=TINY_DEPTHS, pos_embed=True), "pos_embed=[True, True, True]"),
    (dict(depths=TINY_DEPTHS, proj="avg"), "proj=['avg', 'avg', 'avg']"),
    (dict(depths=TINY_DEPTHS, embed_type=["vit", "conv", "conv"]), "embed_type=['vit', 'conv', 'conv']"),
])
def test_transformers_refuses_what_it_cannot_compute(tmp_path, capsys, overrides, problem):
    make_run(tmp_path / "run", **overrides)
    assert main(["export", str(tmp_path / "run"), "--to", "transformers"]) == 2
    err = capsys.readouterr().err
    assert problem in err and "export to onnx or safetensors" in err and "Traceback" not in err


def test_bad_sources(tmp_path, capsys):
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("model: {}\n")
    assert main(["export", str(tmp_path / "run")]) == 2
    assert "has no checkpoints/last.ckpt" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "absent.ckpt"), "--model", "cvt_tiny"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_convert_writes_safetensors(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("cvt_tiny", num_classes=10)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ours.ckpt")
    assert main(["convert", str(tmp_path / "ours.ckpt"), str(tmp_path / "released.safetensors")]) == 0
    from safetensors.torch import load_file

    assert "stage0.patch_embed.proj.weight" in load_file(tmp_path / "released.safetensors")
    reloaded = create_model("cvt_tiny", num_classes=10, checkpoint=tmp_path / "released.safetensors").eval()
    assert torch.equal(logits(reloaded, 32), logits(model.eval(), 32))


def test_export_never_overwrites_silently_and_writes_ordinary_permissions(tmp_path, capsys):
    make_run(tmp_path / "run")
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"someone's file")
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"someone's file"
    old = os.umask(0o022)
    try:
        assert main(["export", str(tmp_path / "run"), "--out", str(out), "--overwrite"]) == 0
        assert main(["convert", str(out), str(tmp_path / "released.pth")]) == 0
        assert main(["convert", str(out), str(tmp_path / "released.pth")]) == 2  # convert refuses too
    finally:
        os.umask(old)
    for path in (out, tmp_path / "released.pth"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_export_of_a_plain_state_dict_infers_its_input_channels(tmp_path):
    model = randomize(create_model("cvt_tiny", num_classes=7, in_chans=1))
    plain = tmp_path / "plain.pth"
    torch.save(model.state_dict(), plain)
    rebuilt = model_from(plain, model="cvt_tiny")
    assert rebuilt.in_chans == 1 and rebuilt.num_classes == 7
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(rebuilt(x), model.eval()(x))


def test_the_transformers_export_covers_every_per_stage_argument():
    from cvt_lab.checkpoint.exports import TRANSFORMERS_STAGE_ARGS
    from cvt_lab.models.spec import STAGE_ARG_NAMES

    assert sorted(TRANSFORMERS_STAGE_ARGS) == sorted(STAGE_ARG_NAMES)
