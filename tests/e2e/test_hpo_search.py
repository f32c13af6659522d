"""Hyperparameter search through the CLI: conf/hparams_search/ runs Optuna (hydra-optuna-sweeper, the hpo extra) over
the job's objective; failed trials fail the sweep as cvt_lab's sweeper does."""

from __future__ import annotations

import pytest
import yaml
from conftest import TINY, run_cli

SEARCH = ("hparams_search=cvt_tiny_optuna", "hydra.sweeper.n_trials=3", "model.img_size=16",
          *(o for o in TINY if not o.startswith("recipe.batch_size=")))


def test_optuna_search_of_three_trials_reports_the_best_and_fails_on_failed_trials(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the hpo extra (hydra-optuna-sweeper)")
    # The batch size is searched too: 0 is refused before anything is built, so that trial fails at once; the
    # seeded sampler draws 16, 0, 16.
    proc = run_cli(*SEARCH, "recipe.batch_size=choice(16,0)", "seed=1", f"hydra.sweep.dir={tmp_path}",
                   "-m", check=False)
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and 0.0 <= best["best_value"] <= 1.0
    assert best["best_params"]["recipe.batch_size"] == 16
    assert {"recipe.optimizer.lr", "recipe.optimizer.weight_decay", "model.drop_path.2"} <= set(best["best_params"])
    assert "Best value" in proc.stdout + proc.stderr
    finished = [d for d in tmp_path.glob("*/results.json") if '"finished"' in d.read_text()]
    failed = proc.stderr.count("recipe.batch_size=0: give at least 1")
    assert failed and len(finished) + failed == 3  # every trial ran
    # failed trials fail the search after it ran, naming each (exit 1, as cvt_lab's sweeper does)
    assert proc.returncode == 1 and f"{failed} of 3 jobs failed" in proc.stderr
    assert "Traceback" not in proc.stderr
