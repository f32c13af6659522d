"""What pyproject.toml declares: the optional extras and the core dependencies, and the message that names a missing
extra. The wheel built from it is tests/e2e/test_package.py."""

from __future__ import annotations

import pytest
from conftest import REPO_ROOT


def test_optional_extras_and_declared_imports():
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for name, package in [("wandb", "wandb"), ("slurm", "hydra-submitit-launcher"), ("hpo", "hydra-optuna-sweeper"),
                          ("onnx", "onnxruntime"), ("dev", "ruff")]:
        assert any(d.startswith(package) for d in extras[name]) and package not in core, name
    assert "cloudpickle" in core and "rich" not in core  # imported by the pool launcher / imported nowhere


def test_a_missing_extra_is_named(monkeypatch, tmp_path):
    import importlib.util
    import sys

    from cvt_lab.__main__ import missing_plugin
    from cvt_lab.loggers import build_logger

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if the wandb extra were not installed
    with pytest.raises(ValueError, match=r"pip install -e '\.\[wandb\]'"):
        build_logger("wandb", str(tmp_path))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("hydra_plugins.hydra_") else find_spec(name, *a))
    assert "pip install -e '.[slurm]'" in missing_plugin(["model=cvt13", "launcher=slurm"])
    assert "pip install -e '.[hpo]'" in missing_plugin(["hparams_search=cvt_tiny_optuna"])
    assert missing_plugin(["launcher=cpu_parallel"]) is None
