"""The package as researchers install it: a wheel carries the Hydra configs and its console script runs from any
directory, and ``import cvt_lab`` in a fresh interpreter stays light. What pyproject.toml declares is
tests/unit/test_extras.py."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cli_env


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(REPO_ROOT)], check=True, capture_output=True)
    wheel = next(out.glob("cvt_lab-*.whl"))
    site = out / "site"
    zipfile.ZipFile(wheel).extractall(site)
    return site


def test_wheel_carries_every_config(unpacked_wheel):
    conf = unpacked_wheel / "cvt_lab" / "conf"
    shipped = {p.relative_to(conf) for p in conf.rglob("*.yaml")}
    in_repo = {p.relative_to(REPO_ROOT / "conf") for p in (REPO_ROOT / "conf").rglob("*.yaml")}
    assert shipped == in_repo
    assert (unpacked_wheel / "cvt_lab" / "experiments" / "paper_tables.yaml").is_file()  # for cvt_lab.report
    shipped_bench = {p.name for p in (unpacked_wheel / "cvt_lab" / "experiments" / "bench").glob("*.json")}
    # the plan's defaults
    assert shipped_bench == {p.name for p in (REPO_ROOT / "experiments" / "bench").glob("*.json")}
    assert (unpacked_wheel / "hydra_plugins" / "cvt_lab_launcher").is_dir()  # launcher=cpu_parallel / gpus


# What a fresh interpreter with the wheel installed reports, as JSON: the modules ``import cvt_lab`` alone brought in
# that it must not (no command line, no Hydra app, no Lightning), then where cvt_lab and its configs were found and
# the parameters of a model built there. One interpreter for both checks: starting one costs seconds.
FRESH_INTERPRETER = """
import json, sys
import cvt_lab
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'hydra') or m.startswith((
    'cvt_lab.train', 'cvt_lab.job', 'cvt_lab.__main__', 'cvt_lab.plan', 'cvt_lab.report', 'cvt_lab.checkpoint.cli',
    'cvt_lab.checkpoint.exports')))
import cvt_lab.paths
params = sum(x.numel() for x in cvt_lab.create_model('cvt13').parameters())
print(json.dumps({'heavy': heavy, 'file': cvt_lab.__file__, 'conf': str(cvt_lab.paths.config_dir()), 'params': params}))
"""


@pytest.fixture(scope="module")
def installed(unpacked_wheel, tmp_path_factory) -> tuple[dict, dict[str, str], Path]:
    """The fresh interpreter's report (FRESH_INTERPRETER), the environment that puts the wheel ahead of the editable
    install on sys.path, and the other directory it ran from."""
    env = cli_env(PYTHONPATH=str(unpacked_wheel))
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    proc = subprocess.run([sys.executable, "-c", FRESH_INTERPRETER], capture_output=True, text=True, env=env,
                          cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), env, elsewhere


def test_installed_wheel_composes_and_builds_from_another_directory(unpacked_wheel, installed):
    report, env, elsewhere = installed
    assert report["file"].startswith(str(unpacked_wheel)) and report["conf"] == str(unpacked_wheel / "cvt_lab" / "conf")
    assert report["params"] == 19_997_480

    script = Path(sys.executable).with_name("cvt-lab")  # the console script, reading the wheel's package here
    assert script.is_file()
    proc = subprocess.run([str(script), "--cfg", "job", "model=cvt21", "recipe=imagenet"],
                          capture_output=True, text=True, env=env, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "depths:\n  - 1\n  - 4\n  - 16" in proc.stdout and "rand-m9-mstd0.5-inc1" in proc.stdout


def test_import_cvt_lab_stays_light(installed):
    """``import cvt_lab`` (models and the timm registry) brings in no command line, no Hydra app, no Lightning."""
    report, _, _ = installed
    assert report["heavy"] == [], report["heavy"]


def test_one_version_from_the_metadata(unpacked_wheel):
    import tomllib
    from importlib.metadata import version

    import cvt_lab

    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert cvt_lab.__version__ == version("cvt_lab") == declared
    (info,) = unpacked_wheel.glob("cvt_lab-*.dist-info")
    assert info.name == f"cvt_lab-{declared}.dist-info"
    assert "License-Expression: MIT" in (info / "METADATA").read_text()
    assert (info / "licenses" / "LICENSE").is_file()
    assert (unpacked_wheel / "cvt_lab" / "py.typed").is_file()  # type information for users' checkers

