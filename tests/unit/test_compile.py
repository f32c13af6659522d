"""torch.compile of the model: one graph per mode (no graph breaks), no recompilation after the first step,
the compiled model's results equal the eager ones, and compiling in place keeps every parameter name.

Dynamo's own counters are the measure; ``backend="eager"`` traces exactly as inductor does (graph breaks and
recompiles are decided by dynamo, before any backend) without generating code, so this runs in seconds.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from cvt_lab.checkpoint import load_checkpoint
from cvt_lab.complexity import count
from cvt_lab.config import ModelConfig
from cvt_lab.models import build_cvt, create_model, load_preset
from cvt_lab.models.cvt import fast_paths


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def tiny(compile: bool | str = False, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("cvt_tiny", num_classes=10, **{"drop_path": 0.1, **overrides})
    if compile:
        model.compile(backend=compile)
    return model


def tiny_args(**overrides) -> dict:
    return {**load_preset("cvt_tiny"), "num_classes": 10, **overrides}


def images(size: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def train_and_eval_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    model.train()
    model(x).square().mean().backward()
    model.eval()
    with torch.no_grad():
        model(x)


def test_one_graph_per_mode_no_recompiles_and_levers_traced_as_constants():
    """The CvT-13 topology (conv embedding, dw_bn projections, class token last), drop path on."""
    model = tiny("eager")
    x = images()
    train_and_eval_step(model, x)  # the first step compiles training, then evaluation
    with torch._dynamo.config.patch(error_on_recompile=True):
        train_and_eval_step(model, x)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 2

    with torch.no_grad():
        fast = model(x)
        with fast_paths(model, False):
            plain = model(x)  # a new setting is a new graph...
        assert torch.equal(model(x), fast)  # ...and the old one is still cached
    assert counters["stats"]["unique_graphs"] == 3
    assert (fast - plain).abs().max().item() <= 1e-4


def test_every_other_kind_compiles_without_graph_breaks():
    """Patch embedding, average-pooling and linear projections, GELU, attention dropout, and position
    embeddings interpolated to another grid than they were made for (built for 32, run at 48)."""
    model = tiny("eager", embed_type=["conv", "patch", "conv"], proj=["dw_bn", "avg", "linear"], act="gelu",
                 pos_embed=True, attn_drop_rate=0.1)
    x = images(48)
    train_and_eval_step(model, x)
    with torch._dynamo.config.patch(error_on_recompile=True):
        train_and_eval_step(model, x)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 2


def test_compiling_in_place_keeps_names_weight_decay_exemptions_and_checkpoints(tmp_path):
    plain, compiled = tiny(pos_embed=True), tiny(pos_embed=True)
    compiled.compile()
    assert type(compiled) is type(plain)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert not any("_orig_mod" in k for k in compiled.state_dict())
    assert compiled.no_weight_decay() == plain.no_weight_decay() == {"stages.0.pos_embed", "stages.1.pos_embed",
                                                                     "stages.2.pos_embed", "stages.2.cls_token"}
    torch.save(plain.state_dict(), tmp_path / "w.pth")
    load_checkpoint(compiled, tmp_path / "w.pth")
    assert count(compiled, 32) == count(plain, 32)  # counted eagerly: nothing compiles
    assert counters["stats"]["unique_graphs"] == 0


def test_compile_mode():
    assert ModelConfig.compile_mode is None
    assert build_cvt(**tiny_args(compile=True))._compiled_call_impl is not None
    assert build_cvt(**tiny_args(compile_mode="reduce-overhead"))._compiled_call_impl is not None  # implies compile
    assert build_cvt(**tiny_args())._compiled_call_impl is None
    with pytest.raises(ValueError, match="unknown model.compile_mode 'fast'; valid choices are default, .*"
                                         "reduce-overhead"):
        build_cvt(**tiny_args(compile_mode="fast"))


def test_a_last_smaller_batch_reuses_the_compiled_graphs():
    """Through the LightningModule the batch size is symbolic from the first step: the last, smaller batch of
    an epoch (or of a validation split) compiles nothing new."""
    from cvt_lab.config import RecipeConfig
    from cvt_lab.module import ImageClassifier

    module = ImageClassifier(tiny("eager"), RecipeConfig(), num_classes=10)
    for batch in (4, 4, 3, 2):
        x = images(batch=batch)
        module.train()
        module(x).square().mean().backward()
        module.eval()
        with torch.no_grad():
            module(x)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 2
