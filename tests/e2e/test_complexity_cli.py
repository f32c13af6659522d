"""``python -m cvt_lab.complexity``: the counting tool's command line in a fresh interpreter (the counts themselves
are tests/unit/test_complexity.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT

SRC = REPO_ROOT / "src"


def test_cli_prints_params_and_macs():
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-m", "cvt_lab.complexity", "model=cvt13"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cvt13: params 19.997M, MACs 4.566G at 224x224" in out.stdout
