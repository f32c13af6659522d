"""Checkpoint interoperability: transformers parity, released-format round trip, wrappers and prefixes,
refusal of other architectures, head replacement for fine-tuning, unreadable files."""

from __future__ import annotations

import logging
import os
import re

import pytest
import torch
from conftest import TINY_DEPTHS, logits, randomize
from hf_fixtures import hf_config, hf_model
from torch import nn

from cvt_lab import create_model
from cvt_lab.checkpoint import (
    export_released,
    load_checkpoint,
    load_state,
    main,
    to_cvt_lab,
    to_released,
)

transformers = pytest.importorskip("transformers")


def tiny(**overrides) -> nn.Module:
    torch.manual_seed(overrides.pop("seed", 0))
    return randomize(create_model("cvt_tiny", **{"num_classes": 10, **overrides}))


@pytest.fixture(scope="module")
def source() -> nn.Module:
    """A cvt_tiny with random weights and BatchNorm statistics (10 classes); tests must not modify it."""
    return tiny()


@pytest.fixture(scope="module")
def source_logits(source) -> torch.Tensor:
    return logits(source, 32)


@pytest.fixture(scope="module")
def released_file(source, tmp_path_factory):
    return export_released(source, tmp_path_factory.mktemp("released") / "CvT-tiny.pth")


def load_tiny(path, **overrides) -> nn.Module:
    return create_model("cvt_tiny", **{"num_classes": 10, "checkpoint": path, **overrides}).eval()


def assert_parity(hf, ours, sizes, batch=2):
    for size in sizes:
        ref, out = logits(hf, size, batch), logits(ours, size, batch)
        assert ref.std() > 0.05  # logits of real magnitude, so the tolerance below means something
        assert (ref - out).abs().max().item() <= 1e-4, f"logits differ at {size}"


# ------------------------------------------------------------------------------------ transformers


def test_transformers_parity_tiny(tmp_path):
    hf = hf_model(tmp_path, hf_config("cvt_tiny", depths=TINY_DEPTHS))
    ours = load_tiny(tmp_path, act="gelu", depths=TINY_DEPTHS)
    assert_parity(hf, ours, (32, 48))


def test_transformers_parity_cvt13(tmp_path):
    """CvT-13 topology, random weights: same logits at 224 and 384 (erf GELU, as transformers uses)."""
    hf = hf_model(tmp_path, hf_config("cvt13"))
    ours = create_model("cvt13", num_classes=10, checkpoint=tmp_path, act="gelu").eval()
    assert_parity(hf, ours, (224, 384), batch=1)


def test_transformers_keys_map_to_ours():
    with torch.device("meta"):
        hf = transformers.CvtForImageClassification(hf_config("cvt_tiny", depths=TINY_DEPTHS))
        ours = create_model("cvt_tiny", num_classes=10, depths=TINY_DEPTHS)
    converted = to_cvt_lab(hf.state_dict())
    assert set(converted) == set(ours.state_dict())
    assert all(converted[k].shape == v.shape for k, v in ours.state_dict().items())


def test_transformers_pytorch_model_bin(tmp_path):
    model = tiny(depths=TINY_DEPTHS)
    with torch.device("meta"):
        hf_keys = transformers.CvtForImageClassification(hf_config("cvt_tiny", depths=TINY_DEPTHS)).state_dict()
    hf_names = {ours: hf for hf, ours in zip(hf_keys, to_cvt_lab(hf_keys))}
    torch.save({hf_names[k]: v for k, v in model.state_dict().items()}, tmp_path / "pytorch_model.bin")
    assert torch.equal(logits(load_tiny(tmp_path, depths=TINY_DEPTHS), 32), logits(model, 32))


# ------------------------------------------------------------------------------- released format


def test_released_round_trip(source, source_logits, released_file):
    state = torch.load(released_file, weights_only=True)
    assert all(re.match(r"stage\d+\.|norm\.|head\.", k) for k in state)
    assert "stage2.cls_token" in state and "stage0.blocks.0.attn.conv_proj_q.bn.running_var" in state
    loaded = load_tiny(released_file)
    assert torch.equal(logits(loaded, 32), source_logits)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in source.state_dict().items())
    assert to_released(to_cvt_lab(state)).keys() == state.keys()


def test_released_cvt13_key_count():
    with torch.device("meta"):
        state = to_released(create_model("cvt13").state_dict())
    assert len(state) == 459  # checkpoints.md: 459 keys in CvT-13-224x224-IN-1k.pth
    assert sum(k.startswith("stage1.blocks.0.") for k in state) == 34


@pytest.mark.parametrize("wrap", [
    lambda s: {f"module.{k}": v for k, v in s.items()},
    lambda s: {"state_dict": s, "epoch": 3},
    lambda s: {"model": {f"module.{k}": v for k, v in s.items()}, "optimizer": {}},
], ids=["module-prefix", "state_dict-wrapper", "model-wrapper"])
def test_released_wrappers_and_prefixes(tmp_path, wrap, source, source_logits):
    torch.save(wrap(to_released(source.state_dict())), tmp_path / "weights")  # no suffix: detected from keys
    assert torch.equal(logits(load_tiny(tmp_path / "weights"), 32), source_logits)


def test_lightning_checkpoint_with_hparams(tmp_path, source, source_logits):
    from omegaconf import OmegaConf

    ckpt = {
        "epoch": 2,
        "state_dict": {**{f"model._orig_mod.{k}": v for k, v in source.state_dict().items()},
                       "criterion.weight": torch.ones(10)},
        "hyper_parameters": {"cfg": OmegaConf.create({"model": {"name": "cvt_tiny"}, "lr": 1e-3})},
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    state = load_state(tmp_path / "last.ckpt")
    assert set(state) == set(source.state_dict())
    assert torch.equal(logits(load_tiny(tmp_path / "last.ckpt"), 32), source_logits)


class _RunsCommand:
    """Unpickling this would run a shell command: the loader must not."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_objects_never_execute(tmp_path, source):
    marker = tmp_path / "executed"
    torch.save({"state_dict": source.state_dict(), "hyper_parameters": _RunsCommand(marker)}, tmp_path / "x.ckpt")
    assert set(load_state(tmp_path / "x.ckpt")) == set(source.state_dict())
    assert not marker.exists()


def test_convert_cli(tmp_path, capsys, source):
    torch.save({"state_dict": source.state_dict()}, tmp_path / "ours.ckpt")
    assert main(["convert", str(tmp_path / "ours.ckpt"), str(tmp_path / "released.pth")]) == 0
    state = torch.load(tmp_path / "released.pth", weights_only=True)
    assert "stage0.patch_embed.proj.weight" in state
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "x.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_convert_to_an_unwritable_path_is_one_message(tmp_path, capsys):
    src = export_released(create_model("cvt_tiny", num_classes=10), tmp_path / "tiny.pth")
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    assert main(["convert", str(src), str(blocked / "out.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {blocked / 'out.pth'}") and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------- refusals


def meta_state_file(path, name: str, **overrides):
    """A released-format file with the keys and shapes of a preset, cheaply (stride-0 tensors)."""
    with torch.device("meta"):
        state = create_model(name, **overrides).state_dict()
    torch.save({k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in to_released(state).items()}, path)
    return path


def test_refuses_cvt21_into_cvt13(tmp_path):
    path = meta_state_file(tmp_path / "CvT-21-224x224-IN-1k.pth", "cvt21")
    with torch.device("meta"):
        model = create_model("cvt13")
    with pytest.raises(ValueError) as info:
        load_checkpoint(model, path)
    msg = str(info.value)
    assert str(path) in msg
    assert "depths=[1, 4, 16]" in msg and "depths=[1, 2, 10]" in msg
    assert "unexpected in the checkpoint: stages.1.blocks.2." in msg
    assert "... and " in msg and "more" in msg  # a long list is truncated, not dumped
    assert len(msg) < 2000


def test_refuses_shape_mismatch(tmp_path):
    path = meta_state_file(tmp_path / "wide.pth", "cvt_tiny", dims=[32, 64, 192], heads=[1, 2, 4])
    with torch.device("meta"):
        model = create_model("cvt_tiny")
    with pytest.raises(ValueError, match=r"shape mismatch: .*stages\.2\.patch_embed\.proj\.weight: "
                                         r"checkpoint \(192, 64, 3, 3\) vs model \(128, 64, 3, 3\)"):
        load_checkpoint(model, path)


def test_pos_embed_missing_is_a_mismatch(source, released_file):
    model = create_model("cvt_tiny", num_classes=10, pos_embed=[True, False, False])
    with pytest.raises(ValueError, match=r"missing from the checkpoint: stages\.0\.pos_embed.*pos_embed=False"):
        load_checkpoint(model, released_file)
    result = load_checkpoint(model, released_file, strict=False)  # non-strict: the rest loads
    assert result.missing == ["stages.0.pos_embed"]
    assert torch.equal(model.norm.weight, source.norm.weight)


def test_head_replaced_for_fine_tuning(source, released_file, caplog):
    path = released_file
    torch.manual_seed(5)
    fresh = create_model("cvt_tiny", num_classes=3)
    fresh_head = {k: v.clone() for k, v in fresh.head.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="cvt_lab.checkpoint"):
        result = load_checkpoint(fresh, path)
    assert result.head_replaced
    assert [r.getMessage() for r in caplog.records] == [
        f"cvt_lab: checkpoint {path}: head replaced for fine-tuning (10 -> 3 classes)"]
    for k, v in fresh.state_dict().items():
        expected = fresh_head[k.removeprefix("head.")] if k.startswith("head.") else source.state_dict()[k]
        assert torch.equal(v, expected), k


def test_unreadable_files(tmp_path, released_file, source):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"\x80\x02 this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match=f"cannot read checkpoint {re.escape(str(bad))}"):
        load_state(bad)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(released_file.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot read checkpoint .*truncated.pth"):
        load_state(truncated)
    torch.save({"epoch": 1, "note": "no weights"}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="holds no tensors"):
        load_state(tmp_path / "empty.pth")
    torch.save(source, tmp_path / "pickled_model.pth")
    with pytest.raises(ValueError, match=r"holds no state dict \(a whole pickled model\?\)"):
        load_state(tmp_path / "pickled_model.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        load_state(tmp_path / "missing.pth")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(FileNotFoundError, match="holds none of model.safetensors"):
        load_state(tmp_path / "emptydir")
