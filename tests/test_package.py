"""The package as researchers install it: a wheel carries the Hydra configs and runs from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import cli_env

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
    shipped = {p.relative_to(unpacked_wheel / "cvt_lab" / "conf") for p in (unpacked_wheel / "cvt_lab" / "conf").rglob("*.yaml")}
    in_repo = {p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml")}
    assert shipped == in_repo
    assert (unpacked_wheel / "cvt_lab" / "experiments" / "paper_tables.yaml").is_file()  # for cvt_lab.report
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
