"""cvt_lab's presets as timm models, checked the way timm checks its own (timm's tests/test_models.py: forward,
backward, default cfgs, forward_intermediates, features_only, export), on cvt_tiny so they stay fast.
TorchScript is not among them: CvT picks its per-stage projection modules in Python, which ``torch.jit.script``
cannot type; ``torch.export`` (what timm checks besides, and what the ONNX exporter uses) is."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.data import resolve_data_config

import cvt_lab
from cvt_lab.models import list_models, load_preset
from cvt_lab.timm_registry import RELEASED, TIMM_NAMES

TAGS = [f"{name}.{tag}" for name, tags in RELEASED.items() for tag in tags]


def images(size: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def tiny(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("cvt_tiny", **kwargs)


# ------------------------------------------------------------------------------------- registry and cfgs


def test_every_preset_registered_under_its_name():
    assert TIMM_NAMES == {name: name for name in list_models()}  # timm has none of these names (timm 1.0.x)
    assert set(TIMM_NAMES) <= set(timm.list_models())
    assert set(TAGS) == {"cvt13.ms_in1k", "cvt13.ms_in1k_384", "cvt13.ms_in22k_ft_in1k_384", "cvt21.ms_in1k",
                         "cvt21.ms_in1k_384", "cvt21.ms_in22k_ft_in1k_384", "cvtw24.ms_in22k_ft_in1k_384"}
    assert set(timm.list_models(pretrained=True, filter="cvt*")) == set(TAGS)
    assert timm.list_pretrained("cvt13*")[0] == "cvt13.ms_in1k"  # the default tag


@pytest.mark.parametrize("name", TAGS)
def test_pretrained_cfgs(name):
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    size = 384 if name.endswith("384") else 224
    assert resolve_data_config({}, pretrained_cfg=cfg) == dict(
        input_size=(3, size, size), interpolation="bicubic", mean=timm.data.IMAGENET_DEFAULT_MEAN,
        std=timm.data.IMAGENET_DEFAULT_STD, crop_pct=0.875 if size == 224 else 1.0, crop_mode="center")
    assert cfg["hf_hub_id"].startswith("microsoft/cvt-") and ("22k" in cfg["hf_hub_id"]) == ("22k" in name)
    assert cfg["num_classes"] == 1000 and cfg["license"] == "mit"


def test_model_resolves_its_data_config():
    with torch.device("meta"):
        model = timm.create_model("cvt13.ms_in22k_ft_in1k_384", num_classes=10)
    assert isinstance(model, cvt_lab.CvT) and model.head.out_features == 10
    assert resolve_data_config({}, model=model)["input_size"] == (3, 384, 384)
    state, cfg = model.state_dict(), model.pretrained_cfg
    assert f"{cfg['classifier']}.weight" in state and f"{cfg['first_conv']}.weight" in state


def test_create_model_takes_preset_arguments():
    model = tiny(num_classes=7, pos_embed=True, img_size=48, global_pool="avg", drop_path_rate=0.2)
    assert model.stages[0].pos_embed is not None and model.stages[0].grid == (12, 12) and model.global_pool == "avg"
    assert [s.blocks[-1].drop_path.drop_prob if s.blocks[-1].drop_path.__class__.__name__ == "DropPath" else 0.0
            for s in model.stages] == [0.0, 0.0, 0.2]  # the preset's [0, 0, 0.1], scaled to the deepest rate
    assert model(images(48)).shape == (2, 7)


# ----------------------------------------------------------------------------- timm's model checks


def test_forward_backward():
    model = tiny(num_classes=42).train()
    out = model(images())
    out.mean().backward()
    assert out.shape == (2, 42) and not out.isnan().any()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("cls_token", [True, False])
def test_default_cfgs_and_head(cls_token):
    """timm's default-cfg check for token models: unpooled tokens, then pooled features without a classifier,
    then no pooling at all."""
    model = tiny(cls_token=[False, False, cls_token]).eval()
    x = images(64, batch=1)
    grid = model.token_grids(64)[-1]
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (1, model.num_prefix_tokens + grid[0] * grid[1], model.num_features)
        assert model.forward_head(tokens, pre_logits=True).shape == (1, model.num_features)
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features) and isinstance(model.get_classifier(), torch.nn.Identity)
        model.reset_classifier(0, "")
        assert model(x).shape == tokens.shape
        model.reset_classifier(5, "avg")
        assert model(x).shape == (1, 5) and model.get_classifier().out_features == 5


def test_pooling_matches_forward():
    model = tiny(num_classes=10).eval()
    with torch.no_grad():
        tokens = model.forward_features(images())
        torch.testing.assert_close(model.forward_head(tokens), model(images()))
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 0])
        model.reset_classifier(10, "avg")
        assert torch.equal(model.forward_head(tokens, pre_logits=True), tokens[:, 1:].mean(1))
    with pytest.raises(ValueError, match="global_pool='token' needs a class token"):
        timm.create_model("cvt_tiny", cls_token=[False, False, False]).reset_classifier(0, "token")


def test_forward_intermediates():
    model = tiny(num_classes=10).eval()
    dims, grids = load_preset("cvt_tiny")["dims"], model.token_grids(64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(images(64))
        assert torch.equal(final, model.forward_features(images(64)))
        assert [m.shape for m in maps] == [(2, d, *g) for d, g in zip(dims, grids)]
        nhwc = model.forward_intermediates(images(64), indices=[0, -1], output_fmt="NHWC", intermediates_only=True)
        assert [m.shape for m in nhwc] == [(2, *grids[0], dims[0]), (2, *grids[2], dims[2])]
        assert torch.equal(nhwc[0].permute(0, 3, 1, 2), maps[0])
        last = model.forward_intermediates(images(64), indices=1, norm=True, intermediates_only=True)[0]
        torch.testing.assert_close(last, model.norm(maps[2].permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        early, (first,) = model.forward_intermediates(images(64), indices=[0], stop_early=True)
        assert torch.equal(first, maps[0]) and early.shape == (2, grids[0][0] * grids[0][1], dims[0])


def test_features_only():
    model = tiny(features_only=True).eval()
    info = load_preset("cvt_tiny")
    assert model.feature_info.channels() == info["dims"] and model.feature_info.reduction() == [4, 8, 16]
    assert model.feature_info.module_name() == ["stages.0", "stages.1", "stages.2"]
    with torch.no_grad():
        feats = model(images(64))
    assert [f.shape for f in feats] == [(2, c, 64 // r, 64 // r) for c, r in zip(info["dims"], [4, 8, 16])]
    two = tiny(features_only=True, out_indices=(0, 1))
    assert len(two.model.stages) == 2 and two.feature_info.channels() == info["dims"][:2]  # later stages pruned


def test_grad_checkpointing_same_gradients():
    grads = []
    for enable in (False, True):
        model = tiny(num_classes=10).train()
        model.set_grad_checkpointing(enable)
        torch.manual_seed(1)  # the same drop path in both runs
        model(images()).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert all(s.grad_checkpointing for s in model.stages)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_torch_export_dynamic_batch():
    model = tiny(num_classes=10).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (images(),), dynamic_shapes=({0: batch},))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(images(batch=3)), model(images(batch=3)))
