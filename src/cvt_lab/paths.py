"""Where the package finds its Hydra configs, installed (wheel) or from a source checkout."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The ``conf/`` directory: inside the installed package (wheel) or at the repository root (editable)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"cvt_lab: no Hydra configs found (looked for conf/config.yaml in {here} and {here.parents[1]}); "
        "reinstall the package (pip install .) or run from a source checkout"
    )
