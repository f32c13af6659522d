"""cvt_lab's presets as timm models: ``timm.create_model("cvt13", num_classes=10)``, ``"cvt13.ms_in1k"``...

``import cvt_lab`` registers every preset of ``conf/model/`` (the single source of truth for their
architecture) with timm's ``register_model`` under its own name (``cvt13``, ``cvt21``, ``cvtw24``,
``deit_s``, ``cvt_tiny``), or as ``cvt_lab_<name>`` when timm already has a model of that name. Each one's
``pretrained_cfg`` (timm's ``generate_default_cfgs``) gives the input size, mean/std, crop and
interpolation of the released weights and where they come from: the Hugging Face Hub copies of Microsoft's
released files (``microsoft/cvt-13``...), read in transformers' layout and renamed to ours by
:func:`checkpoint_filter_fn`. A released ``.pth`` loads the same way with
``pretrained_cfg_overlay=dict(file="CvT-13-224x224-IN-1k.pth")``. docs/interop.md shows the use.
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, model_entrypoint, register_model

from cvt_lab.checkpoint.formats import state_dict_of, to_cvt_lab
from cvt_lab.models import CvT, list_models, load_preset
from cvt_lab.models.factory import FACTORY_KEYS

# The released weights (Microsoft's CvT model zoo), by preset: timm tag -> (image size, Hugging Face Hub repo).
# ImageNet-1k at 224 and 384, and ImageNet-22k pre-training fine-tuned on ImageNet-1k at 384 (1000 classes).
RELEASED: dict[str, dict[str, tuple[int, str]]] = {
    "cvt13": {"ms_in1k": (224, "microsoft/cvt-13"), "ms_in1k_384": (384, "microsoft/cvt-13-384"),
              "ms_in22k_ft_in1k_384": (384, "microsoft/cvt-13-384-22k")},
    "cvt21": {"ms_in1k": (224, "microsoft/cvt-21"), "ms_in1k_384": (384, "microsoft/cvt-21-384"),
              "ms_in22k_ft_in1k_384": (384, "microsoft/cvt-21-384-22k")},
    "cvtw24": {"ms_in22k_ft_in1k_384": (384, "microsoft/cvt-w24-384-22k")},
}
TIMM_PREFIX = "cvt_lab_"  # for a preset whose name timm already uses


def _cfg(size: int, **kwargs: Any) -> dict[str, Any]:
    """The released evaluation: bicubic, ImageNet mean/std; at 224 resize to 256 and centre-crop, at 384 no crop."""
    return dict(num_classes=1000, input_size=(3, size, size), pool_size=None, crop_pct=0.875 if size == 224 else 1.0,
                interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv="stages.0.patch_embed.proj", classifier="head", license="mit",
                paper_ids="arXiv:2103.15808", **kwargs)


def timm_name(preset: str) -> str:
    """The name a preset is registered under in timm (its own, unless timm has a model of that name)."""
    return TIMM_PREFIX + preset if is_model(preset) and model_entrypoint(preset).__module__ != __name__ else preset


def checkpoint_filter_fn(state_dict: dict, model: CvT) -> dict:
    """timm's ``pretrained_filter_fn``: any checkpoint layout (released, transformers, Lightning) -> ours."""
    return to_cvt_lab(state_dict_of(state_dict))


def _build(preset: str, global_pool: str | None = None, drop_path_rate: float | None = None, **kwargs: Any) -> CvT:
    """The preset's CvT with ``kwargs`` replacing its arguments; timm's ``drop_path_rate`` sets the deepest
    rate, the other stages keeping the preset's proportions (all stages get it when the preset has none)."""
    args = {k: v for k, v in load_preset(preset).items() if k not in (*FACTORY_KEYS, "img_size")}
    if drop_path_rate is not None:
        top = max(args["drop_path"])
        args["drop_path"] = [drop_path_rate * r / top if top else drop_path_rate for r in args["drop_path"]]
    model = CvT(**{**args, **kwargs})
    model.preset = preset
    if global_pool is not None:
        model.reset_classifier(model.num_classes, global_pool)
    return model


def _entrypoint(preset: str, name: str):
    def create(pretrained: bool = False, **kwargs: Any) -> CvT:
        try:
            return build_model_with_cfg(
                lambda **kw: _build(preset, **kw), name, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                feature_cfg=dict(out_indices=kwargs.pop("out_indices", len(load_preset(preset)["depths"])),
                                 feature_cls="getter"),
                **kwargs)
        except OSError as e:  # huggingface_hub's: offline, or not cached; as checkpoint=hf-hub: says it
            if not pretrained or type(e).__module__.split(".")[0] != "huggingface_hub":
                raise
            cfg = kwargs.get("pretrained_cfg_overlay") or {}
            repo = cfg.get("hf_hub_id") or getattr(kwargs.get("pretrained_cfg"), "hf_hub_id", None)
            raise FileNotFoundError(unreachable_weights(name, repo, e)) from None

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"cvt_lab's ``{preset}`` preset (conf/model/{preset}.yaml)."
    return create


def unreachable_weights(name: str, repo: str | None, error: BaseException) -> str:
    """One message for pretrained weights timm cannot fetch: which, why, and what to do."""
    from huggingface_hub import constants

    repo = f"hf-hub:{repo}" if repo else "the Hugging Face Hub"
    why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
           else f"the Hub cannot be reached ({str(error).splitlines()[0][:120]})")
    return (f"cvt_lab: timm.create_model({name!r}, pretrained=True) needs the released weights from {repo}, which "
            f"are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}: download them once with the "
            "network, point HF_HUB_CACHE at a cache that holds them, or load a local file with "
            "cvt_lab.create_model(..., checkpoint=PATH)")


TIMM_NAMES: dict[str, str] = {preset: timm_name(preset) for preset in list_models()}
default_cfgs = generate_default_cfgs({  # timm's register_model reads this module's default_cfgs
    **{f"{TIMM_NAMES[preset]}.{tag}": _cfg(size, hf_hub_id=repo)
       for preset, tags in RELEASED.items() if preset in TIMM_NAMES for tag, (size, repo) in tags.items()},
    **{TIMM_NAMES[preset]: _cfg(load_preset(preset)["img_size"]) for preset in TIMM_NAMES if preset not in RELEASED},
})
for _preset, _name in TIMM_NAMES.items():
    register_model(_entrypoint(_preset, _name))
