"""The one specification of CvT's arguments: which are per stage, their types and defaults. The model
(:class:`cvt_lab.models.CvT`), the config schema (:class:`ModelConfig`, ``cvt_lab.config.ModelConfig``) and the
transformers export derive their argument lists from it; the suite checks CvT's signature against it."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any

from omegaconf import MISSING


@dataclass(frozen=True)
class Arg:
    name: str
    type: type
    default: Any = MISSING  # the CvT constructor's default; MISSING: presets must give it


# One value per stage (a single value is broadcast to all stages); ``depths`` gives the number of stages.
STAGE_ARGS = (
    Arg("dims", int, (64, 192, 384)),
    Arg("heads", int, (1, 3, 6)),
    Arg("embed_type", str, "conv"),
    Arg("embed_kernel", int, (7, 3, 3)),
    Arg("embed_stride", int, (4, 2, 2)),
    Arg("embed_padding", int, (2, 1, 1)),
    Arg("proj", str, "dw_bn"),
    Arg("proj_kernel", int, 3),
    Arg("q_stride", int, 1),
    Arg("kv_stride", int, 2),
    Arg("pos_embed", bool, False),
    Arg("cls_token", bool, (False, False, True)),
    Arg("mlp_ratio", float, 4.0),
    Arg("qkv_bias", bool, True),
    Arg("drop_path", float, (0.0, 0.0, 0.1)),
)
STAGE_ARG_NAMES = tuple(a.name for a in STAGE_ARGS)
DEPTHS = Arg("depths", int, (1, 2, 10))
# Whole-model arguments: before the stages (input and head) and after them (options of every block).
INPUT_ARGS = (Arg("num_classes", int, 1000), Arg("in_chans", int, 3), Arg("img_size", int, 224))
OPTION_ARGS = (Arg("act", str, "quick_gelu"), Arg("attn_scale", str, "dim"), Arg("drop_rate", float, 0.0),
               Arg("attn_drop_rate", float, 0.0), Arg("norm_eps", float, 1e-5))
OPTION_ARG_NAMES = tuple(a.name for a in OPTION_ARGS)
# CvT's constructor arguments, in its signature's order.
CONSTRUCTOR_ARGS = (*INPUT_ARGS, DEPTHS, *STAGE_ARGS, *OPTION_ARGS)

# The schema's fields that steer the factory (cvt_lab.models.build_cvt) rather than the constructor.
FACTORY_FIELDS = (
    ("_target_", str, field(default="cvt_lab.models.build_cvt")),
    ("name", str, field(default=MISSING)),
    ("compile", bool, field(default=False)),  # torch.compile the model in place (training and evaluation)
    ("compile_mode", str | None, field(default=None)),  # e.g. reduce-overhead (CUDA graphs); set: compiles too
)
FACTORY_KEYS = tuple(name for name, _, _ in FACTORY_FIELDS)


def _schema_field(arg: Arg) -> tuple[str, Any, Any]:
    if arg in STAGE_ARGS or arg is DEPTHS:  # presets give every stage's value
        return arg.name, list[arg.type], field(default=MISSING)
    return arg.name, arg.type, field(default=arg.default)


# The typed schema of the ``model`` config group: the factory's fields, then every constructor argument.
ModelConfig = make_dataclass("ModelConfig", [*FACTORY_FIELDS, *map(_schema_field, CONSTRUCTOR_ARGS)],
                             namespace={"__doc__": "The ``model`` group: :class:`cvt_lab.models.CvT`'s arguments "
                                                   "(cvt_lab.models.spec) and the factory's.",
                                        "__module__": __name__})
