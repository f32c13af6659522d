"""``checkpoint=hf-hub:org/name[@revision]``: read through huggingface_hub from a locally prepared Hub cache
(HF_HUB_CACHE, HF_HUB_OFFLINE=1; no network), also by timm's pretrained loading; one clear message when a
repository is not cached in offline mode."""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import TINY_DEPTHS
from hf_fixtures import COMMIT, REPO
from test_checkpoint import assert_parity  # skips this module too where transformers is missing

from cvt_lab import create_model
from cvt_lab.checkpoint import hub, load_state, main
from cvt_lab.errors import JobError, as_job_error

transformers = pytest.importorskip("transformers")


def test_hub_checkpoint_loads_offline(hub_cache):
    ours = create_model("cvt_tiny", num_classes=10, depths=TINY_DEPTHS, act="gelu", checkpoint=f"hf-hub:{REPO}").eval()
    assert_parity(hub_cache, ours, (32,))
    pinned = load_state(f"hf-hub:{REPO}@{COMMIT}")
    assert set(pinned) == set(hub_cache.state_dict())


def test_timm_pretrained_from_hub_cache(hub_cache):
    """timm's own pretrained path: hf_hub_id -> huggingface_hub -> our key filter (a new head: 5 classes)."""
    model = timm.create_model("cvt_tiny", pretrained=True, num_classes=5, depths=TINY_DEPTHS, act="gelu",
                              pretrained_cfg_overlay=dict(hf_hub_id=REPO, num_classes=10)).eval()
    reference = create_model("cvt_tiny", num_classes=10, depths=TINY_DEPTHS, act="gelu",
                             checkpoint=f"hf-hub:{REPO}")
    assert model.head.out_features == 5
    for k, v in reference.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(model.state_dict()[k], v), k


def test_missing_repo_offline_is_one_message(hub_cache, capsys):
    with pytest.raises(FileNotFoundError) as info:
        load_state("hf-hub:cvt-lab-tests/absent")
    message = str(info.value)
    assert "hf-hub:cvt-lab-tests/absent" in message and "HF_HUB_OFFLINE" in message and "HF_HUB_CACHE" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert isinstance(as_job_error(info.value), JobError)  # python -m cvt_lab checkpoint=...: exit 2
    assert main(["export", "hf-hub:cvt-lab-tests/absent", "--model", "cvt_tiny"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["hf-hub:", "hf-hub:a/b/c", "hf-hub:/"])
def test_bad_spec(spec):
    with pytest.raises(ValueError, match="hf-hub:ORG/NAME"):
        hub.parse(spec)


def test_spec_identity_needs_no_network():
    assert hub.spec_id("hf-hub:microsoft/cvt-13") == hub.spec_id("hf-hub:microsoft/cvt-13@main")
    assert hub.spec_id("hf-hub:microsoft/cvt-13") != hub.spec_id("hf-hub:microsoft/cvt-21")


def test_timm_pretrained_offline_is_one_message(hub_cache):
    """timm's pretrained=True for a repository the offline cache does not hold: one message, as hf-hub: gives."""
    with pytest.raises(FileNotFoundError) as info:
        timm.create_model("cvt_tiny", pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="cvt-lab-tests/absent"))
    message = str(info.value)
    assert message.startswith("cvt_lab: timm.create_model('cvt_tiny', pretrained=True)")
    assert "hf-hub:cvt-lab-tests/absent" in message and "HF_HUB_OFFLINE is set" in message and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
