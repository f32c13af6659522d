"""The LightningModule: the paper's optimizer groups, learning-rate scaling, schedule, Mixup and loss."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from cvt_lab.config import RecipeConfig
from cvt_lab.models import create_model
from cvt_lab.module import ImageClassifier, NonFiniteLossError
from cvt_lab.paths import config_dir


def recipe(name: str, **overrides) -> RecipeConfig:
    cfg = OmegaConf.merge(OmegaConf.structured(RecipeConfig), OmegaConf.load(config_dir() / "recipe" / f"{name}.yaml"))
    cfg.merge_with(overrides)
    return OmegaConf.to_object(cfg)


def classifier(r: RecipeConfig, steps_per_epoch: int = 10, world_size: int = 1, **model_args) -> ImageClassifier:
    model = create_model("cvt_tiny", num_classes=10, pos_embed=True, **model_args)
    module = ImageClassifier(model, r, num_classes=10)
    trainer = SimpleNamespace(world_size=world_size, accumulate_grad_batches=1, max_epochs=r.epochs, current_epoch=0,
                              global_step=0,
                              estimated_stepping_batches=steps_per_epoch * r.epochs)
    module._trainer = trainer  # what configure_optimizers reads, without a Trainer
    return module


def test_imagenet_recipe_is_the_papers():
    r = recipe("imagenet")
    module = classifier(r, world_size=8)  # 8 GPUs x 256 = 2048, the paper's global batch
    optimizer = module.configure_optimizers()["optimizer"]
    assert type(optimizer).__name__ == "AdamW"
    assert max(g["initial_lr"] if "initial_lr" in g else g["lr"] for g in optimizer.param_groups) == \
        pytest.approx(5e-4 * 2048 / 512)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in module.model.named_parameters() if id(p) not in decayed}
    assert any(n.endswith("pos_embed") for n in names) and any(n.endswith("cls_token") for n in names)
    assert all(p.ndim > 1 for n, p in module.model.named_parameters() if id(p) in decayed)
    assert any(g["weight_decay"] == 0.05 for g in optimizer.param_groups)
    assert isinstance(module.train_loss, SoftTargetCrossEntropy) and module.mixup is not None
    assert module.mixup.mixup_alpha == 0.8 and module.mixup.cutmix_alpha == 1.0 and module.mixup.label_smoothing == 0.1


def test_compiled_model_gets_the_same_parameter_groups():
    """``model.compile=true`` compiles in place: weight decay still skips the class token, the position
    embeddings, norms and biases, by the same names."""

    def groups(module: ImageClassifier) -> list[tuple[float, list[str]]]:
        names = {id(p): n for n, p in module.model.named_parameters()}
        optimizer = module.configure_optimizers()["optimizer"]
        return [(g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in optimizer.param_groups]

    plain, compiled = classifier(recipe("imagenet")), classifier(recipe("imagenet"), compile=True)
    assert groups(compiled) == groups(plain)
    assert not any("_orig_mod" in k for k in compiled.state_dict())
    no_decay = next(names for wd, names in groups(compiled) if wd == 0)
    assert {"stages.2.cls_token", "stages.0.pos_embed"} <= set(no_decay)


def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    r = recipe("imagenet", epochs=10, optimizer={"lr_base_batch": None})
    module = classifier(r, steps_per_epoch=10)
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    lr_at = lambda step: sched._get_lr(step)[0]  # noqa: E731
    assert lr_at(0) == pytest.approx(1e-6)
    # Linear warm-up over 5 epochs (50 steps), then timm's cosine (warm-up counted in its span, as in DeiT/CvT).
    assert lr_at(49) == pytest.approx(1e-6 + 49 / 50 * (5e-4 - 1e-6))
    lrs = [lr_at(t) for t in range(100)]
    assert lrs.index(max(lrs)) == 49 and max(lrs) <= 5e-4
    assert all(a >= b for a, b in zip(lrs[50:], lrs[51:]))  # decays monotonically
    assert lr_at(99) == pytest.approx(1e-5, rel=0.05)


def test_finetune_recipe_is_sgd_by_steps():
    r = recipe("finetune", max_steps=500)
    module = classifier(r)
    optimizer = module.configure_optimizers()["optimizer"]
    assert type(optimizer).__name__ == "SGD" and optimizer.param_groups[0]["momentum"] == 0.9
    assert r.batch_size == 512 and r.image_size == 384 and r.augment.crop_pct == 1.0


def test_cpu_recipe_loss_and_nan_guard():
    module = classifier(recipe("cpu"))
    assert isinstance(module.train_loss, LabelSmoothingCrossEntropy) and module.mixup is None
    module.log = lambda *a, **k: None
    module.optimizers = lambda: SimpleNamespace(param_groups=[{"lr": 1.0}])
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    assert torch.isfinite(module.training_step((images, labels), 0))
    with pytest.raises(NonFiniteLossError, match="training loss is nan"):
        module.training_step((images * float("nan"), labels), 0)
