"""The run identity (cvt_lab.identity): one list of keys outside it, checked against conf/; job names made from
overrides stay within the file system's limits, readable and unique."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import REPO_ROOT, compose_config
from omegaconf import OmegaConf

from cvt_lab.identity import NAME_LIMIT, NAMED_BY_CONTENTS, NOT_IDENTITY, identity_of, in_identity, job_dirname

CONF = REPO_ROOT / "conf"


def exclude_keys_of(path: Path) -> list[str]:
    node = OmegaConf.select(OmegaConf.load(path), "hydra.job.config.override_dirname.exclude_keys")
    return list(node or [])


@pytest.mark.parametrize("path", [CONF / "config.yaml", *sorted((CONF / "experiment").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_what_never_names_a_job_is_outside_the_identity(path):
    """conf/'s exclude_keys against the one list: a key left out of job names either cannot change a result, or is
    named otherwise (the checkpoint by its contents), or is swept by the experiment itself (its data set, and a
    handwriting ablation's model, come from the scale, which names the sweep directory)."""
    swept_by_the_experiment = {"data", "model"} if path.parent.name == "experiment" else set()
    for key in exclude_keys_of(path):
        assert not in_identity(key) or key in NAMED_BY_CONTENTS | swept_by_the_experiment, (path.name, key)


def test_the_keys_outside_the_identity_are_one_list():
    assert in_identity("model.dims") and in_identity("recipe.optimizer.lr") and in_identity("seed")
    assert in_identity("callbacks.ema.decay") and in_identity("+callbacks.mine._target_")
    for key in NOT_IDENTITY:
        assert not in_identity(key) and not in_identity(f"{key}.deeper"), key
    assert not in_identity("callbacks.checkpoint.every_n_epochs") and not in_identity("logger.name")
    assert not in_identity("model._target_") and not in_identity("threads") and not in_identity("hydra.run.dir")


def test_identity_leaves_out_what_does_not_change_a_result():
    base, config = identity_of(compose_config())
    assert "data.num_workers" not in config and "callbacks.checkpoint.filename" not in config
    assert identity_of(compose_config("data.num_workers=3", "callbacks.checkpoint.every_n_epochs=2"))[0] == base
    assert identity_of(compose_config("callbacks=ema"))[0] != base


def test_callbacks_outside_the_identity_stay_out_of_job_names():
    name = job_dirname("callbacks.checkpoint.every_n_epochs=5,callbacks.ema.decay=0.9,seed=1", None)
    assert name == "callbacks.ema.decay=0.9,seed=1"


def test_list_values_keep_their_commas():
    assert job_dirname("model.kv_stride=[1,1,1],seed=0", None) == "model.kv_stride=[1,1,1],seed=0"


def test_long_job_names_stay_within_the_limit_readable_and_unique(tmp_path):
    long = ",".join(f"model.option_{i}=[{','.join(['123456'] * 8)}]" for i in range(8))
    a, b = job_dirname(long + ",seed=0", None), job_dirname(long + ",seed=1", None)
    assert a != b and a.startswith("model.option_0=[123456,")  # readable from its start, unique by its hash
    for name in (a, b):
        assert all(len(part.encode()) <= NAME_LIMIT for part in name.split("/"))
        (tmp_path / name).mkdir(parents=True)  # the file system takes it
    assert job_dirname("seed=0", None) == "seed=0"  # short names are as they were


def test_any_valid_set_of_overrides_gives_a_runnable_sweep_job(tmp_path):
    """Many long overrides on a real sweep: every job gets a directory the file system accepts."""
    from cvt_lab.plan.jobs import compose_sweep

    overrides = [f"paths.output_dir={tmp_path}", "seed=0,1", "model.dims=[" + ",".join(["32"] * 40) + "]",
                 "model.depths=[" + ",".join(["1"] * 40) + "]", "model.heads=[" + ",".join(["1"] * 40) + "]",
                 "logger.tags=[" + ",".join(f"tag{i:03d}" for i in range(60)) + "]",
                 "recipe.optimizer.lr=0.00123456789"]
    sweep = compose_sweep(overrides)
    dirs = [job.job_dir for job in sweep.jobs]
    assert len(dirs) == 2 and len(set(dirs)) == 2
    for d in dirs:
        d.mkdir(parents=True)
        assert all(len(part.encode()) <= 255 for part in d.parts) and os.path.isdir(d)
