"""Hyperparameter search: the job returns its objective as a float, and conf/hparams_search/ runs Optuna
(hydra-optuna-sweeper, the hpo extra) over it; failed trials fail the sweep as cvt_lab's sweeper does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import TINY, compose_config, run_cli

from cvt_lab.__main__ import objective_value
from cvt_lab.results import RunRecord

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ("hparams_search=cvt_tiny_optuna", "hydra.sweeper.n_trials=3", "model.img_size=16",
          *(o for o in TINY if not o.startswith("recipe.batch_size=")))


def test_objective_is_the_returned_float_and_the_record_otherwise():
    record = RunRecord(status="finished", val_acc1=0.75, test_loss=0.5)
    assert objective_value(record, "val/acc1") == 0.75 and isinstance(objective_value(record, "test/loss"), float)
    assert objective_value(record, None)["val/acc1"] == 0.75  # the dict, as before
    with pytest.raises(ValueError, match="measured no val/acc5"):
        objective_value(record, "val/acc5")
    assert compose_config("hparams_search=cvt_tiny_optuna").objective == "val/acc1"


@pytest.mark.slow  # end to end: make test-fast leaves it out
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


def test_wandb_sweep_calls_the_app_with_hydra_overrides():
    sweep = yaml.safe_load((ROOT / "experiments" / "wandb_sweep.yaml").read_text())
    assert sweep["command"][1:4] == ["python", "-m", "cvt_lab"] and sweep["command"][-1] == "${args_no_hyphens}"
    assert sweep["metric"] == {"name": "val/acc1", "goal": "maximize"}
    # every searched key is a config key the app accepts (as W&B passes it: key=value)
    cfg = compose_config(*(o for o in sweep["command"][4:-1]),
                         *(f"{k}={p['min']}" for k, p in sweep["parameters"].items()))
    assert cfg.recipe.optimizer.lr == pytest.approx(3e-4) and cfg.model.drop_path[2] == 0.0
