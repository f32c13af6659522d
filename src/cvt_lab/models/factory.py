"""Build CvT models from the presets in ``conf/model/`` (the single source of truth for every preset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cvt_lab.models.cvt import CvT
from cvt_lab.models.spec import FACTORY_KEYS, ModelConfig
from cvt_lab.paths import config_dir


def list_models() -> list[str]:
    """Names of the classifier presets in ``conf/model/`` (not the line recognizers', whose ``_target_`` is in
    :mod:`cvt_lab.htr`: they are not CvT classifiers, for timm or ``create_model``)."""
    return sorted(p.stem for p in (config_dir() / "model").glob("*.yaml")
                  if "_target_: cvt_lab.htr." not in p.read_text())


def _preset_path(name: str) -> Path:
    path = config_dir() / "model" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"cvt_lab: unknown model {name!r}; valid presets are {', '.join(list_models())}")
    return path


def load_preset(name: str) -> dict[str, Any]:
    """A preset's arguments, with its ``defaults`` (other presets it extends) merged in, checked
    against :class:`ModelConfig`. Hydra composes the same files the same way for the CLI."""
    raw = OmegaConf.load(_preset_path(name))
    parents = [OmegaConf.create(load_preset(p)) for p in raw.pop("defaults", []) if p != "_self_"]
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), *parents, raw)
    return OmegaConf.to_container(cfg, resolve=True)


def compile_modes() -> tuple[str, ...]:
    """The ``mode`` values this torch's ``torch.compile`` accepts (e.g. ``reduce-overhead``: CUDA graphs)."""
    from torch._inductor import list_mode_options

    return tuple(list_mode_options())


def build_cvt(name: str = "custom", compile: bool = False, compile_mode: str | None = None,
              _target_: str | None = None, **kwargs: Any) -> CvT:
    """Build a CvT from constructor arguments (what ``hydra.utils.instantiate(cfg.model)`` calls).

    ``compile`` (or a ``compile_mode``) compiles the model in place (``nn.Module.compile``): it stays a
    :class:`CvT`, so parameter names, state dict keys and ``no_weight_decay()`` are those of the plain model.
    Compilation itself happens on the first call."""
    if compile_mode is not None and compile_mode not in compile_modes():
        raise ValueError(f"cvt_lab: unknown model.compile_mode {compile_mode!r}; valid choices are "
                         f"{', '.join(compile_modes())}")
    model = CvT(**kwargs)
    model.preset = name
    if compile or compile_mode is not None:
        model.compile(mode=compile_mode)
    return model


def create_model(name: str, num_classes: int = 1000, checkpoint: str | Path | None = None,
                 **overrides: Any) -> CvT:
    """Create a preset model, e.g. ``create_model("cvt13", num_classes=10, pos_embed=True)``.

    ``overrides`` replace preset arguments (per-stage arguments take a list or one value for all
    stages). ``checkpoint`` loads weights in our, the released (``.pth``) or the transformers format, from
    a path or a Hugging Face Hub repository (``hf-hub:microsoft/cvt-13``);
    a different ``num_classes`` than the checkpoint's replaces the head on purpose (fine-tuning).
    """
    args = load_preset(name)
    unknown = sorted(set(overrides) - set(args))
    if unknown:
        raise ValueError(f"cvt_lab: unknown model argument(s) {unknown}; valid ones are "
                         f"{', '.join(k for k in args if k not in FACTORY_KEYS)}")
    args.update(overrides, num_classes=num_classes)
    model = build_cvt(**args)
    if checkpoint is not None:
        from cvt_lab.checkpoint.load import load_checkpoint

        load_checkpoint(model, checkpoint)
    return model
