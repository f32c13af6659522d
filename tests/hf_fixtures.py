"""transformers CvT models, shared by the checkpoint, Hub and handwriting tests and conftest's ``hub_cache``
(importable from every test folder, as conftest is; transformers is imported only when a helper is called)."""

from __future__ import annotations

import torch
from conftest import randomize

from cvt_lab.models import load_preset

REPO = "cvt-lab-tests/tiny-cvt"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hf_config(name: str, **overrides):
    """The transformers config of one of our presets (10 classes)."""
    import transformers

    a = {**load_preset(name), **overrides}
    return transformers.CvtConfig(
        num_labels=10, embed_dim=a["dims"], num_heads=a["heads"], depth=a["depths"], patch_sizes=a["embed_kernel"],
        patch_stride=a["embed_stride"], patch_padding=a["embed_padding"], kernel_qkv=a["proj_kernel"],
        stride_kv=a["kv_stride"], cls_token=a["cls_token"], mlp_ratio=a["mlp_ratio"], qkv_bias=a["qkv_bias"],
    )


def hf_model(path, config):
    """A transformers CvT with random weights and BatchNorm statistics, saved to ``path``."""
    import transformers

    torch.manual_seed(0)
    hf = randomize(transformers.CvtForImageClassification(config))
    hf.save_pretrained(path)
    return hf
