"""The registered handwriting sweeps through their command lines: make's recipe (registration, sweep, report), and
a tiny registered sweep run by the CLI: each job's per-line outcomes, and the report's confirmatory / exploratory
label with CER intervals. The tables' specs and verdicts on hand-made sweeps: tests/integration/test_htr_tables.py."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, run_cli, write_prereg

from cvt_lab.identity import file_sha256
from cvt_lab.report import report
from cvt_lab.report.prereg import load_prereg, sweep_overrides
from cvt_lab.results import read_outcomes, read_record

E2E_PREREG = """\
table: htr_kv_stride
scale: cpu
experiment: htr_ablation_kv_stride
metric: test/cer
overrides:
  - data.source=sklearn
  - data.train_lines=32
  - data.val_lines=8
  - data.test_lines=16
  - recipe.batch_size=16
  - recipe.epochs=1
  - "model.depths=[1,1,1]"
  - "model.dims=[16,32,32]"
  - "model.heads=[1,2,2]"
rows: [stride1, stride2]
seeds: [100, 101]
alpha: 0.05
family: htr_test
smallest_effect: 2.0
margins: {stride1: 2.0}
"""


def test_a_registered_tiny_handwriting_sweep_end_to_end(tmp_path, capsys):
    """The registered sweep's command line (what make runs), run: every job records the registration and its
    per-line edits; the report calls it confirmatory against its registration and exploratory against another,
    with CER intervals."""
    from cvt_lab.htr.report import main

    path = write_prereg(tmp_path / "prereg", "htr_kv_stride", E2E_PREREG)
    overrides = sweep_overrides(load_prereg(path), "model/kv_stride")
    run_cli(*overrides, f"paths.output_dir={tmp_path / 'out'}", "launcher=serial", "threads=1", "-m", timeout=900)
    sweep = tmp_path / "out" / "sweeps" / "htr_kv_stride_cpu"
    jobs = sorted(p.parent for p in sweep.rglob("results.json"))
    assert len(jobs) == 4
    for job in jobs:  # the CER from the per-line edits is the CER torchmetrics logged
        record, outcomes = read_record(job), read_outcomes(job)
        assert record.prereg["sha256"] == file_sha256(path) and len(outcomes["test_edits"]) == 16
        assert outcomes["test_edits"].sum() / outcomes["test_chars"].sum() == pytest.approx(record.test_cer)

    assert main([str(sweep), "--out", str(tmp_path / "reports"), "--prereg-dir", str(path.parent)]) == 0
    md = capsys.readouterr().out
    assert "**Confirmatory: claim" in md and "CER in %, lower is better" in md
    cell = next(line for line in md.splitlines() if line.startswith("| a | `stride1`"))
    assert " [" in cell and "(90%)" in cell and "`stride2` not worse than `stride1`" in cell

    other = write_prereg(tmp_path / "other", "htr_kv_stride", E2E_PREREG.replace("{stride1: 2.0}", "{stride1: 3.0}"))
    md = report(sweep, tmp_path / "reports2", prereg_root=other.parent)["md"].read_text()
    assert "**Exploratory: claim" in md and "4 of 4 jobs do not carry the registration's sha256" in md


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_runs_the_registered_handwriting_sweep_then_its_report():
    """``make -n`` runs the recipe line that calls $(MAKE) (the registration's command line), and prints the rest."""
    dry = subprocess.run(["make", "-n", "--no-print-directory", "htr_ablation_kv_stride", "STAMP=",
                          f"PY={sys.executable}"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert "cvt_lab.prereg htr_kv_stride --scale cpu" in dry
    assert "cvt_lab.report htr_ablation_kv_stride --scale cpu" in dry
