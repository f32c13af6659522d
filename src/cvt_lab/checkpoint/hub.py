"""Weights from the Hugging Face Hub: ``checkpoint=hf-hub:org/name[@revision]`` (e.g. ``hf-hub:microsoft/cvt-13``).

:func:`download` fetches a repository's config and weights through ``huggingface_hub`` into its cache
(``HF_HOME`` / ``HF_HUB_CACHE``; once there, nothing is downloaded again) and returns the snapshot
directory, which :func:`cvt_lab.checkpoint.load_state` reads like any local checkpoint directory. With
``HF_HUB_OFFLINE=1`` only the cache is read. safetensors files are preferred; ``pytorch_model.bin`` and
released ``.pth`` files are fetched only when a repository has no safetensors weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PREFIX = "hf-hub:"
# Fetched first; the second group only when the first brought no weights (never both formats of one repo).
SAFETENSORS_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json"]
PICKLE_FILES = ["*.bin", "*.bin.index.json", "*.pth", "*.pt", "*.ckpt"]


def is_hub_spec(path: object) -> bool:
    """Whether a checkpoint argument names a Hub repository (``hf-hub:...``) rather than a local path."""
    return isinstance(path, str) and path.startswith(PREFIX)


def parse(spec: str) -> tuple[str, str | None]:
    """``hf-hub:org/name@revision`` -> (``org/name``, ``revision`` or None for the default branch)."""
    repo_id, _, revision = spec.removeprefix(PREFIX).partition("@")
    if repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"cvt_lab: checkpoint={spec}: give a Hub repository as hf-hub:ORG/NAME[@REVISION], "
                         "e.g. hf-hub:microsoft/cvt-13")
    return repo_id, revision or None


def spec_id(spec: str) -> str:
    """A run identity for a Hub checkpoint without the network: its repository and revision (pin a revision,
    ``@<commit>``, for an identity that a later push to the repository cannot change)."""
    repo_id, revision = parse(spec)
    return hashlib.sha256(f"{repo_id}@{revision or 'main'}".encode()).hexdigest()[:16]


def _has_weights(folder: Path) -> bool:
    return any(p.suffix in (".safetensors", ".bin", ".pth", ".pt", ".ckpt") for p in folder.iterdir())


def download(spec: str) -> Path:
    """The local snapshot directory of Hub checkpoint ``spec`` (downloaded into the cache if needed)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = parse(spec)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=SAFETENSORS_FILES))
        if not _has_weights(folder):
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=PICKLE_FILES))
    except LocalEntryNotFoundError as e:  # also an incomplete snapshot in the cache
        where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
        if constants.HF_HUB_OFFLINE:
            raise FileNotFoundError(f"cvt_lab: checkpoint={spec} is not in {where} and HF_HUB_OFFLINE is set: "
                                    "download it once with the network (unset HF_HUB_OFFLINE), or point "
                                    "HF_HUB_CACHE at a cache that holds it") from None
        raise FileNotFoundError(f"cvt_lab: checkpoint={spec}: the Hub cannot be reached and {where} does not hold "
                                f"it ({str(e).splitlines()[0]}); check the network, or give a local path") from None
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as e:
        raise FileNotFoundError(f"cvt_lab: checkpoint={spec}: {type(e).__name__}: {str(e).splitlines()[0]} "
                                "(a private or gated repository needs `hf auth login` or HF_TOKEN)") from None
    except (HFValidationError, HfHubHTTPError) as e:
        raise ValueError(f"cvt_lab: checkpoint={spec}: {str(e).splitlines()[0]}") from None
    return folder
