"""The CvT backbone: every preset's output shape, every per-stage option, drop-path schedule, pooling,
position embeddings, and one clear ValueError for each kind of bad configuration."""

from __future__ import annotations

import dataclasses
import functools
import inspect

import pytest
import torch
from torch import nn

from cvt_lab import CvT, create_model, list_models
from cvt_lab.config import ModelConfig
from cvt_lab.models.cvt import ACTIVATIONS, EMBED_TYPES, FAST_PATHS, PROJ_TYPES, fast_paths
from cvt_lab.models.factory import FACTORY_KEYS


def tiny(**overrides) -> nn.Module:
    torch.manual_seed(0)
    return create_model("cvt_tiny", **{"num_classes": 10, **overrides})


def images(size: int, batch: int = 2, **kwargs) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0), **kwargs)


def forward_backward(model: nn.Module, size: int = 32) -> torch.Tensor:
    model.train()
    out = model(images(size))
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no (finite) gradient for {missing}"
    return out


# ------------------------------------------------------------------------------------------- presets


def test_presets_listed():
    assert {"cvt13", "cvt21", "cvtw24", "cvt_tiny", "deit_s"} <= set(list_models())


@functools.cache
def meta_preset(name: str) -> nn.Module:
    """A preset built on the meta device, once for the sizes it is run at (a meta forward changes nothing in it)."""
    with torch.device("meta"):
        return create_model(name).eval()


@pytest.mark.parametrize("size", [224, 160, 384])
@pytest.mark.parametrize("name", list_models())
def test_preset_output_shape(name, size):
    """Shapes of every preset at every size, on the meta device (shape propagation, no compute)."""
    model = meta_preset(name)
    with torch.no_grad():
        out = model(images(size, batch=1, device="meta"))
    assert out.shape == (1, 1000)
    assert isinstance(model, CvT) and model.preset == name


def test_cvt13_real_forward_at_160():
    model = create_model("cvt13", num_classes=7).eval()
    with torch.no_grad():
        out = model(images(160, batch=1))
    assert out.shape == (1, 7) and torch.isfinite(out).all()


def test_tiny_real_forward_sizes():
    model = tiny().eval()
    with torch.no_grad():
        assert model(images(32)).shape == (2, 10)
        assert model(images(48)).shape == (2, 10)
        assert model(torch.randn(2, 3, 32, 40)).shape == (2, 10)  # non-square


# ------------------------------------------------------------------------------------ per-stage options


@pytest.mark.parametrize("embed", EMBED_TYPES)
@pytest.mark.parametrize("proj", PROJ_TYPES)
def test_projection_and_embedding_kinds(proj, embed):
    model = tiny(proj=proj, embed_type=embed)
    assert forward_backward(model).shape == (2, 10)
    attn = model.stages[0].blocks[0].attn
    if proj == "dw_bn":
        assert all(isinstance(p.bn, nn.BatchNorm2d) for p in (attn.conv_proj_q, attn.conv_proj_k, attn.conv_proj_v))
    elif proj == "avg":  # pooling shrinks k and v only; q stays the tokens
        assert attn.conv_proj_q is None and isinstance(attn.conv_proj_k, nn.AvgPool2d)
    else:
        assert attn.conv_proj_q is attn.conv_proj_k is attn.conv_proj_v is None
    a = {k: v[1] for k, v in model.stage_args.items()}
    conv = model.stages[1].patch_embed.proj
    expected = (a["embed_stride"], 0) if embed in ("patch", "vit") else (a["embed_kernel"], a["embed_padding"])
    assert (conv.kernel_size[0], conv.padding[0]) == expected  # patches: kernel = stride, no padding
    # ViT/DeiT's patch embedding has no norm: its tokens keep the projection's scale
    norm = model.stages[1].patch_embed.norm
    assert isinstance(norm, nn.Identity) if embed == "vit" else isinstance(norm, nn.LayerNorm)


def test_mixed_kinds_per_stage():
    model = tiny(proj=["dw_bn", "avg", "linear"], embed_type=["patch", "conv", "patch"], kv_stride=[2, 1, 2])
    forward_backward(model)
    assert [type(s.blocks[0].attn.conv_proj_k).__name__ for s in model.stages] == ["Sequential", "AvgPool2d",
                                                                                    "NoneType"]


def test_pos_embed_per_stage_and_resizing():
    model = tiny(pos_embed=[True, False, True])
    grids = model.token_grids(32)
    assert [s.grid for s in model.stages] == grids
    assert model.stages[0].pos_embed.shape == (1, grids[0][0] * grids[0][1], 32)
    assert model.stages[1].pos_embed is None
    assert model.stages[2].pos_embed.shape == (1, grids[2][0] * grids[2][1], 128)
    assert model.no_weight_decay() == {"stages.0.pos_embed", "stages.2.pos_embed", "stages.2.cls_token"}
    assert model.token_grids(48) != grids
    forward_backward(model, 48)  # another resolution: the embeddings are interpolated
    assert model.stages[0].pos_embed.grad is not None
    stage = model.stages[2]
    assert stage.resized_pos_embed(grids[2]) is stage.pos_embed
    with torch.no_grad():
        stage.pos_embed.fill_(0.5)
    resized = stage.resized_pos_embed((6, 5))
    assert resized.shape == (1, 30, 128) and torch.allclose(resized, torch.full_like(resized, 0.5))


def test_cls_token_vs_mean_pooling():
    captured = {}
    for cls_token in (True, False):
        model = tiny(cls_token=[False, False, cls_token]).eval()
        model.stages[-1].register_forward_hook(lambda m, i, out: captured.update(out=out))
        with torch.no_grad():
            features = model.forward_head(model.forward_features(images(32)), pre_logits=True)
        tokens, hw, cls = captured["out"]
        assert hw == model.token_grids(32)[-1] and tokens.shape == (2, hw[0] * hw[1], 128)
        if cls_token:
            assert cls.shape == (2, 1, 128)
            expected = model.norm(cls[:, 0])
        else:
            assert cls is None and model.stages[-1].cls_token is None
            expected = model.norm(tokens).mean(dim=1)
        torch.testing.assert_close(features, expected)


def test_drop_path_linear_within_each_stage():
    with torch.device("meta"):
        model = create_model("cvt13", drop_path=[0.1, 0.2, 0.3])
    for stage, rate, depth in zip(model.stages, (0.1, 0.2, 0.3), (1, 2, 10)):
        rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in stage.blocks]
        expected = [rate * j / max(depth - 1, 1) for j in range(depth)]  # from 0 within each stage
        assert rates == pytest.approx(expected)
    assert isinstance(model.stages[2].blocks[0].drop_path, nn.Identity)  # rate 0: no op at all


# ---------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("call, pattern", [
    (lambda: create_model("cvt99"), r"unknown model 'cvt99'; valid presets are .*cvt13.*cvtw24"),
    (lambda: tiny(proj="conv"), r"unknown proj 'conv'; valid choices are 'dw_bn', 'avg', 'linear'"),
    (lambda: tiny(embed_type="overlap"), r"unknown embed_type 'overlap'; valid choices are 'conv', 'patch'"),
    (lambda: tiny(act="relu"), r"unknown act 'relu'; valid choices are " + ", ".join(map(repr, ACTIVATIONS))),
    (lambda: tiny(dims=[32, 64, 130]), r"stage 2 width 130 is not divisible by its 4 heads"),
    (lambda: tiny(heads=[1, 2]), r"`heads` has 2 entries but the model has 3 stages"),
    (lambda: tiny(depths=[1, 1, 1, 1]), r"`dims` has 3 entries but the model has 4 stages"),
    (lambda: create_model("cvt13", img_size=2), r"input 2 is too small: stage 0's token embedding"),
    (lambda: create_model("deit_s", img_size=8), r"input 8 is too small"),
    (lambda: create_model("cvt13", depth=[1, 2, 3]), r"unknown model argument\(s\) \['depth'\]; valid ones .*depths"),
    (lambda: tiny(cls_token=[True, False, True]), r"class token is only supported in the last stage"),
], ids=["preset", "proj", "embed", "act", "heads", "lengths", "depths-length", "img-size", "patch-img-size",
        "override-key", "cls-token-stage"])
def test_bad_configuration_raises_one_clear_error(call, pattern):
    with torch.device("meta"), pytest.raises(ValueError, match=pattern) as info:
        call()
    assert info.value.__cause__ is None and info.value.__context__ is None  # one error, not a chain


def test_bad_images_at_forward():
    with torch.device("meta"):
        model = create_model("cvt13")
        with pytest.raises(ValueError, match="input \\(2, 2\\) is too small"):
            model(torch.empty(1, 3, 2, 2))
        with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\)"):
            model(torch.empty(3, 32, 32))


def test_model_config_mirrors_constructor():
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    params = inspect.signature(CvT.__init__).parameters
    assert set(fields) == (set(params) - {"self"}) | set(FACTORY_KEYS) == (set(params) - {"self"}) | {
        "_target_", "name", "compile", "compile_mode"}
    for name, f in fields.items():  # scalar defaults agree; per-stage ones come from the presets
        if name in params and f.default is not dataclasses.MISSING and f.default != "???":
            assert f.default == params[name].default, name


# --------------------------------------------------------------------------------------------- speed levers


def test_speed_levers_are_module_attributes_switched_per_model():
    model, other = tiny(), tiny()
    assert model.set_fast_paths() == dict(FAST_PATHS) and all(FAST_PATHS.values())
    assert model.stages[0].blocks[0].mlp.silu_mlp and model.stages[0].blocks[0].attn.fused_attention
    with fast_paths(model, False, silu_mlp=True) as settings:
        assert settings == {**dict.fromkeys(FAST_PATHS, False), "silu_mlp": True}
        assert not model.stages[2].blocks[1].attn.zero_copy_layout and not model.zero_copy_layout
        assert other.set_fast_paths() == dict(FAST_PATHS)  # no global state: other models keep theirs
    assert model.set_fast_paths() == dict(FAST_PATHS)
    assert model.set_fast_paths(fused_attention=False)["fused_attention"]  # returns the previous settings
    assert not model.stages[1].blocks[0].attn.fused_attention and model.stages[1].blocks[0].mlp.silu_mlp
    with pytest.raises(ValueError, match="unknown speed lever.*'flash'.*valid ones are silu_mlp, fused_attention"):
        model.set_fast_paths(flash=True)
    with pytest.raises(TypeError, match="takes the model whose levers to switch first"):
        fast_paths(False)


@pytest.mark.parametrize("lever", [None, *FAST_PATHS])
def test_levers_keep_the_fp32_logits_and_gradients(lever):
    """All levers off (None), or one alone off: eval logits (non-trivial BatchNorm statistics) within 1e-4,
    and the training loss and gradients of the plain formulation."""
    model = tiny(drop_path=0.0)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
            bn.running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(2))
    off = {"enabled": False} if lever is None else {lever: False}
    start = {k: v.clone() for k, v in model.state_dict().items()}  # training moves the BatchNorm statistics
    results = []
    for settings in ({}, off):
        model.load_state_dict(start)
        with fast_paths(model, **settings):
            model.eval()
            with torch.no_grad():
                logits = model(images(32))
            model.zero_grad()
            model.train()
            model(images(32)).square().mean().backward()
            results.append((logits, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (fast, fast_grads), (plain, plain_grads) = results
    assert (fast - plain).abs().max().item() <= 1e-4
    for name, grad in fast_grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_cvt_config_schema_and_export_derive_their_arguments_from_one_specification():
    import dataclasses
    import inspect

    from cvt_lab.config import ModelConfig
    from cvt_lab.models import CvT
    from cvt_lab.models.spec import CONSTRUCTOR_ARGS, FACTORY_KEYS, STAGE_ARG_NAMES

    signature = inspect.signature(CvT.__init__).parameters
    assert [n for n in signature if n != "self"] == [a.name for a in CONSTRUCTOR_ARGS]
    for arg in CONSTRUCTOR_ARGS:
        assert signature[arg.name].default == arg.default, arg.name
    schema = [f.name for f in dataclasses.fields(ModelConfig)]
    assert schema == [*FACTORY_KEYS, *(a.name for a in CONSTRUCTOR_ARGS)]
    model = CvT(depths=[1], dims=[16], heads=[1], embed_kernel=3, embed_stride=2, embed_padding=1, cls_token=True,
                drop_path=0.0, img_size=8, num_classes=3)
    assert set(model.stage_args) == set(STAGE_ARG_NAMES)
    assert list(model.constructor_args()) == [a.name for a in CONSTRUCTOR_ARGS]
