"""The package as researchers install it: a wheel carries the Hydra configs and runs from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import cli_env

pytestmark = pytest.mark.slow  # end to end: make test-fast leaves it out

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(out.glob("cvt_lab-*.whl"))
    site = out / "site"
    zipfile.ZipFile(wheel).extractall(site)
    return site


def test_wheel_carries_every_config(unpacked_wheel):
    conf = unpacked_wheel / "cvt_lab" / "conf"
    shipped = {p.relative_to(conf) for p in conf.rglob("*.yaml")}
    in_repo = {p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped == in_repo
    assert (unpacked_wheel / "cvt_lab" / "experiments" / "paper_tables.yaml").is_file()  # for cvt_lab.report
    shipped_bench = {p.name for p in (unpacked_wheel / "cvt_lab" / "experiments" / "bench").glob("*.json")}
    assert shipped_bench == {p.name for p in (ROOT / "experiments" / "bench").glob("*.json")}  # the plan's defaults
    assert (unpacked_wheel / "hydra_plugins" / "cvt_lab_launcher").is_dir()  # launcher=cpu_parallel / gpus


def test_installed_wheel_composes_and_builds_from_another_directory(unpacked_wheel, tmp_path):
    env = cli_env(PYTHONPATH=str(unpacked_wheel))  # ahead of the editable install on sys.path
    code = ("import cvt_lab, cvt_lab.paths as p; print(cvt_lab.__file__); print(p.config_dir()); "
            "print(sum(x.numel() for x in cvt_lab.create_model('cvt13').parameters()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    module_file, conf, params = proc.stdout.split()
    assert module_file.startswith(str(unpacked_wheel)) and conf == str(unpacked_wheel / "cvt_lab" / "conf")
    assert int(params) == 19_997_480

    proc = subprocess.run([sys.executable, "-m", "cvt_lab", "--cfg", "job", "model=cvt21", "recipe=imagenet"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "depths:\n  - 1\n  - 4\n  - 16" in proc.stdout and "rand-m9-mstd0.5-inc1" in proc.stdout


def test_one_version_from_the_metadata(unpacked_wheel):
    import tomllib
    from importlib.metadata import version

    import cvt_lab

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert cvt_lab.__version__ == version("cvt_lab") == declared
    (info,) = unpacked_wheel.glob("cvt_lab-*.dist-info")
    assert info.name == f"cvt_lab-{declared}.dist-info"
    assert "License-Expression: MIT" in (info / "METADATA").read_text()
    assert (info / "licenses" / "LICENSE").is_file()
    assert (unpacked_wheel / "cvt_lab" / "py.typed").is_file()  # type information for users' checkers


def test_optional_extras_and_declared_imports():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
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
