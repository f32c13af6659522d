"""Hyperparameter search: the job returns its objective as a float, and a W&B sweep calls the app with Hydra
overrides. The Optuna search itself (conf/hparams_search/) is tests/e2e/test_hpo_search.py."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO_ROOT, compose_config

from cvt_lab.__main__ import objective_value
from cvt_lab.results import RunRecord


def test_objective_is_the_returned_float_and_the_record_otherwise():
    record = RunRecord(status="finished", val_acc1=0.75, test_loss=0.5)
    assert objective_value(record, "val/acc1") == 0.75 and isinstance(objective_value(record, "test/loss"), float)
    assert objective_value(record, None)["val/acc1"] == 0.75  # the dict, as before
    with pytest.raises(ValueError, match="measured no val/acc5"):
        objective_value(record, "val/acc5")
    assert compose_config("hparams_search=cvt_tiny_optuna").objective == "val/acc1"


def test_wandb_sweep_calls_the_app_with_hydra_overrides():
    sweep = yaml.safe_load((REPO_ROOT / "experiments" / "wandb_sweep.yaml").read_text())
    assert sweep["command"][1:4] == ["python", "-m", "cvt_lab"] and sweep["command"][-1] == "${args_no_hyphens}"
    assert sweep["metric"] == {"name": "val/acc1", "goal": "maximize"}
    # every searched key is a config key the app accepts (as W&B passes it: key=value)
    cfg = compose_config(*(o for o in sweep["command"][4:-1]),
                         *(f"{k}={p['min']}" for k, p in sweep["parameters"].items()))
    assert cfg.recipe.optimizer.lr == pytest.approx(3e-4) and cfg.model.drop_path[2] == 0.0
