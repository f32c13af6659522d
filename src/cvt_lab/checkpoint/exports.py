"""Write a CvT for other tools: the released ``.pth`` layout, safetensors, ONNX and a transformers directory.

:func:`model_from` rebuilds the model of a run directory (its ``.hydra/config.yaml`` and
``checkpoints/last.ckpt``), of a checkpoint inside one, of a safetensors file written here (the model's
arguments travel in its metadata) or of any checkpoint plus a preset name; :func:`export` writes it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvt_lab.checkpoint.formats import load_state, to_cvt_lab, to_released
from cvt_lab.checkpoint.hub import is_hub_spec, parse
from cvt_lab.checkpoint.load import load_checkpoint
from cvt_lab.rundir import CONFIG_FILE, LAST_CHECKPOINT, checkpoint_file

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("safetensors", "onnx", "transformers")
RUN_CONFIG = Path(CONFIG_FILE)  # a run directory's layout is cvt_lab.rundir's
RUN_CHECKPOINT = Path(LAST_CHECKPOINT)
MODEL_METADATA = "cvt_lab.model"  # safetensors metadata key: the CvT constructor arguments, as JSON


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_weights(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a state dict: safetensors for a ``.safetensors`` path (with ``metadata``), else ``torch.save``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(_plain(state), path, metadata={"format": "pt", **(metadata or {})})
    else:
        torch.save(_plain(state), path)
    return path


def ordinary_permissions(path: Path) -> Path:
    """Give what an export wrote the permissions of any file the user creates (``0666`` / ``0777`` less the
    umask): some writers create theirs private (``0600``), which hides them from the group that shares the run."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)
    return path


class DestinationExists(FileExistsError):
    """The export's destination exists, and replacing it was not asked for."""


def refuse_overwrite(path: Path, overwrite: bool) -> None:
    """An export never replaces an existing file or directory unless asked to (``--overwrite``)."""
    if not overwrite and (path.exists() or path.is_symlink()):
        raise DestinationExists(f"cvt_lab: {path} exists; export to another path (--out), or replace it with "
                                "--overwrite")


def export_released(model: nn.Module, path: str | Path) -> Path:
    """Write the model's weights in the released layout (``stage{i}.`` keys; ``.pth``, or ``.safetensors``)."""
    return save_weights(to_released(model.state_dict()), path)


def convert(src: str | Path, dst: str | Path, to: str = "released", overwrite: bool = False) -> Path:
    """Rewrite checkpoint ``src`` (any layout) as a plain state dict in layout ``to`` at ``dst`` (safetensors
    when ``dst`` ends in ``.safetensors``); an existing ``dst`` is refused unless ``overwrite``."""
    refuse_overwrite(Path(dst), overwrite)
    state = load_state(src)
    return ordinary_permissions(save_weights(to_released(state) if to == "released" else to_cvt_lab(state), dst))


# ------------------------------------------------------------------------------------------------ the model


def _run_dir_of(path: Path) -> Path | None:
    """The run directory a path is or lies in (``RUN`` or ``RUN/checkpoints/x.ckpt``), if any."""
    for candidate in (path, path.parent.parent):
        if (candidate / RUN_CONFIG).is_file():
            return candidate
    return None


def _run_model_args(run_dir: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / RUN_CONFIG)
    args = OmegaConf.to_container(cfg.model, resolve=True)
    return {k: v for k, v in args.items() if k not in ("_target_", "compile", "compile_mode")}


def _safetensors_model_args(path: Path) -> dict[str, Any] | None:
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        args = (f.metadata() or {}).get(MODEL_METADATA)
    return json.loads(args) if args else None


def model_from(src: str | Path, model: str | None = None) -> nn.Module:
    """The model a run directory or checkpoint holds, in eval mode. ``model`` (a preset name) builds the
    architecture when ``src`` does not say it (a released ``.pth``, a transformers directory, a Hub repo)."""
    from omegaconf.errors import OmegaConfBaseException

    from cvt_lab.models import build_cvt, create_model

    path = Path(src) if not is_hub_spec(src) else None
    run_dir = _run_dir_of(path) if path is not None else None
    if run_dir is not None and path == run_dir:
        path = run_dir / RUN_CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"cvt_lab: run directory {run_dir} has no {RUN_CHECKPOINT}: it never finished "
                                    "an epoch; export one of its checkpoints, or train it first")
    source = path if path is not None else src
    args = _safetensors_model_args(path) if path is not None else None
    if model is not None:  # a plain state dict: its shapes say the class count and the input channels
        state = to_cvt_lab(load_state(source))
        head, embed = state.get("head.weight"), state.get("stages.0.patch_embed.proj.weight")
        net = create_model(model, num_classes=head.shape[0] if head is not None else 0,
                           **({"in_chans": int(embed.shape[1])} if embed is not None else {}))
    elif args is not None or run_dir is not None:
        origin = path if args is not None else run_dir / RUN_CONFIG
        try:
            net = build_cvt(**(args if args is not None else _run_model_args(run_dir)))
        except (TypeError, ValueError, OmegaConfBaseException) as e:
            raise ValueError(f"cvt_lab: cannot rebuild the model {origin} describes ({str(e).splitlines()[0]}); name "
                             "its preset with --model") from None
    else:
        raise ValueError(f"cvt_lab: {src} does not say which architecture it holds (no run directory around it): "
                         "name the preset it was trained as, e.g. --model cvt13")
    load_checkpoint(net, source)
    return net.eval()


def _quick_gelu(model: nn.Module) -> bool:
    return model.options["act"] == "quick_gelu"


# ---------------------------------------------------------------------------------------------- the formats


def export_safetensors(model: nn.Module, out: Path) -> Path:
    """Our layout in safetensors, with the constructor arguments in the metadata (so the file alone rebuilds it)."""
    return save_weights(model.state_dict(), out, {MODEL_METADATA: json.dumps(
        {"name": getattr(model, "preset", "custom"), **model.constructor_args()})})


def export_onnx(model: nn.Module, out: Path, image_size: int | None = None, check_batch: int = 3) -> tuple[Path, float]:
    """ONNX (torch's dynamo exporter) with a dynamic batch axis; returns the file and the largest absolute
    difference of onnxruntime's logits from PyTorch's on a batch of another size than the traced one."""
    import onnxruntime

    size = image_size or model.img_size
    example = torch.randn(2, model.in_chans, size, size, generator=torch.Generator().manual_seed(0))
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(model, (example,), out, dynamo=True, input_names=["images"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    images = torch.randn(check_batch, model.in_chans, size, size, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        reference = model(images)
    return out, (torch.from_numpy(logits) - reference).abs().max().item()


# How transformers' CvtConfig expresses each per-stage argument (cvt_lab.models.spec.STAGE_ARGS; the suite checks
# every one is here): its argument's name, or None where it has none and the value is derived (the patch embedding's
# kernel and padding, from embed_type) or checked (only the values its CvT computes).
TRANSFORMERS_STAGE_ARGS: dict[str, str | None] = {
    "dims": "embed_dim", "heads": "num_heads", "embed_stride": "patch_stride", "mlp_ratio": "mlp_ratio",
    "qkv_bias": "qkv_bias", "cls_token": "cls_token", "proj_kernel": "kernel_qkv", "kv_stride": "stride_kv",
    "q_stride": "stride_q", "drop_path": "drop_path_rate", "embed_type": None, "embed_kernel": None,
    "embed_padding": None, "proj": None, "pos_embed": None,
}


def transformers_config(model: nn.Module):
    """transformers' ``CvtConfig`` for ``model``; refuses what its CvT cannot compute (it has only the dw_bn
    projection, no position embedding, the width-wide attention scale and LayerNorm eps 1e-5)."""
    import transformers

    a = model.constructor_args()
    problems = [f"{k}={a[k]}" for k, ok in (("proj", all(p == "dw_bn" for p in a["proj"])),
                                            ("pos_embed", not any(a["pos_embed"])),
                                            ("embed_type", "vit" not in a["embed_type"]),
                                            ("attn_scale", a["attn_scale"] == "dim"),
                                            ("norm_eps", a["norm_eps"] == 1e-5),
                                            # it indexes stage i's drop-path rates by i (its own quirk)
                                            ("depths", all(d > i for i, d in enumerate(a["depths"])))) if not ok]
    if problems:
        raise ValueError(f"cvt_lab: transformers' CvT cannot compute this model ({', '.join(problems)}): it has "
                         "only proj=dw_bn, no pos_embed, a normalized token embedding (conv or patch), attn_scale=dim, "
                         "eps 1e-5, and needs more than i blocks in stage i; export to onnx or safetensors")
    patch = [k if t == "conv" else s for k, s, t in zip(a["embed_kernel"], a["embed_stride"], a["embed_type"])]
    padding = [p if t == "conv" else 0 for p, t in zip(a["embed_padding"], a["embed_type"])]
    kwargs = {theirs: a[ours] for ours, theirs in TRANSFORMERS_STAGE_ARGS.items() if isinstance(theirs, str)}
    return transformers.CvtConfig(
        num_channels=a["in_chans"], num_labels=a["num_classes"], depth=a["depths"], patch_sizes=patch,
        patch_padding=padding, padding_kv=[k // 2 for k in a["proj_kernel"]],
        padding_q=[k // 2 for k in a["proj_kernel"]], layer_norm_eps=1e-5, **kwargs,
    )


def export_transformers(model: nn.Module, out: Path) -> tuple[Path, float]:
    """A ``CvtForImageClassification`` directory (config.json + model.safetensors); returns it and the largest
    absolute difference of transformers' logits from ours. transformers' CvT computes the erf GELU: for an
    ``act=quick_gelu`` model (the released weights) the logits differ by that, and a warning says so."""
    import transformers

    with torch.device("meta"):
        hf = transformers.CvtForImageClassification(transformers_config(model))
    theirs = dict(zip(to_cvt_lab(hf.state_dict()), hf.state_dict()))  # our name -> transformers' name
    hf.load_state_dict({theirs[k]: v for k, v in _plain(model.state_dict()).items()}, strict=True, assign=True)
    hf.save_pretrained(out)
    if _quick_gelu(model):
        log.warning("cvt_lab: transformers' CvT uses the erf GELU where this model (act=quick_gelu, as the released "
                    "weights) uses QuickGELU: its logits differ from ours by the max |diff| printed")
    reloaded = transformers.CvtForImageClassification.from_pretrained(out).eval()
    size = model.img_size
    images = torch.randn(2, model.in_chans, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (reloaded(images).logits - model(images)).abs().max().item()
    return out, diff


def default_out(src: str | Path, to: str) -> Path:
    """Where :func:`export` writes without ``out``: ``RUN/export/`` for a run, else beside the checkpoint."""
    if is_hub_spec(src):
        path = Path(parse(str(src))[0].replace("/", "--"))
    else:
        path = Path(src)
    base = path / "export" / "model" if (path / RUN_CONFIG).is_file() else path.with_suffix("")
    return base.with_name(base.name + "-transformers") if to == "transformers" else base.with_suffix(f".{to}")


def line_recognizer_of(src: str | Path) -> Any:
    """The line recognizer (:class:`cvt_lab.htr.module.LineRecognizer`) a run directory or ``.ckpt`` holds, or
    None when ``src`` holds a classifier (or any weights without a line recognizer's charset)."""
    from cvt_lab.htr.module import load_line_recognizer

    return None if is_hub_spec(src) else load_line_recognizer(checkpoint_file(src))


def export_line(recognizer: Any, to: str, out: Path, image_size: int | None, overwrite: bool
                ) -> tuple[Path, dict[str, float]]:
    """A line recognizer as ONNX (:mod:`cvt_lab.htr.export`), its charset beside it."""
    from cvt_lab.htr.export import charset_file, export_line_onnx

    if to != "onnx":
        raise ValueError(f"cvt_lab: --to {to} writes a CvT classifier; a line recognizer exports to ONNX with its "
                         "charset (--to onnx), and its checkpoint is its weights file")
    if image_size is not None and image_size != recognizer.line_height:
        raise ValueError(f"cvt_lab: --image-size {image_size}: a line recognizer reads lines of the height it was "
                         f"trained at ({recognizer.line_height} px), and its ONNX graph takes any width; drop "
                         "--image-size")
    refuse_overwrite(charset_file(out), overwrite)
    written, diffs = export_line_onnx(recognizer, out)
    ordinary_permissions(charset_file(out))
    return written, diffs


def export(src: str | Path, to: str = "safetensors", out: str | Path | None = None, model: str | None = None,
           image_size: int | None = None, overwrite: bool = False) -> tuple[Path, float | dict[str, float] | None]:
    """Export run directory or checkpoint ``src`` as ``to`` (one of :data:`EXPORT_FORMATS`) at ``out``;
    returns the path written and, for onnx and transformers, the max |diff| of their logits from PyTorch's (for a
    line recognizer, per checked width). An existing ``out`` is refused (:class:`FileExistsError`) unless
    ``overwrite``."""
    if to not in EXPORT_FORMATS:
        raise ValueError(f"cvt_lab: unknown export format {to!r}; valid ones are {', '.join(EXPORT_FORMATS)}")
    out = Path(out) if out is not None else default_out(src, to)
    refuse_overwrite(out, overwrite)
    recognizer = line_recognizer_of(src) if model is None else None
    if recognizer is not None:
        written, diffs = export_line(recognizer, to, out, image_size, overwrite)
        return ordinary_permissions(written), diffs
    net = model_from(src, model)
    if to == "safetensors":
        written, diff = export_safetensors(net, out), None
    elif to == "onnx":
        written, diff = export_onnx(net, out, image_size)
    else:
        written, diff = export_transformers(net, out)
    return ordinary_permissions(written), diff
