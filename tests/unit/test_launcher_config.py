"""The sweep launcher's configuration and arithmetic, without launching: the default launcher of each scale, the
slots of CPUs and GPUs, how many jobs fit a GPU. The launches themselves are tests/e2e/test_sweep.py."""

from __future__ import annotations

import pytest
from conftest import compose_config


@pytest.mark.parametrize("overrides, launcher", [
    ([], "cpu_parallel"),  # scale=cpu: both cores of a 2-core machine
    (["experiment=ablation_pos_embed"], "cpu_parallel"),
    (["launcher=serial"], "serial"),
    (["scale=paper"], "serial"),
    (["experiment=ablation_pos_embed", "scale=paper"], "serial"),
    (["hparams_search=cvt_tiny_optuna"], "serial"),
    (["scale=paper", "launcher=gpus"], "gpus"),
])
def test_default_launcher_follows_the_scale(overrides, launcher):
    _, composed = compose_config(*overrides, hydra=True)
    assert composed.hydra.runtime.choices.launcher == launcher
    assert composed.hydra.launcher._target_.endswith("BasicLauncher" if launcher == "serial" else "PoolLauncher")


def test_make_slots():
    from hydra_plugins.cvt_lab_launcher.pool import make_slots

    assert make_slots(True, 3, None, 1, 0) == ["0", "1", "2"]
    assert make_slots(True, None, [4, 5, 6, 7, 8], 2, 0) == ["4,5", "6,7"]
    assert make_slots(False, None, None, 1, 3) == [None, None, None]
    with pytest.raises(ValueError, match="num_gpus"):
        make_slots(True, 0, None, 1, 0)


def test_jobs_per_gpu_fit_and_values():
    from hydra_plugins.cvt_lab_launcher.pool import CUDA_CONTEXT_BYTES, jobs_per_slot, jobs_that_fit, parse_jobs_per_gpu

    gib = 2**30
    assert jobs_that_fit(gib - CUDA_CONTEXT_BYTES, 80 * gib, 0.15) == 68  # 68 GiB usable, 1 GiB a job
    assert jobs_that_fit(100 * gib, 80 * gib, 0.15) == 1  # one job always runs
    assert jobs_per_slot(68, 1, 16) == 16 and jobs_per_slot(68, 2, 16) == 8  # never more jobs than cores
    assert jobs_per_slot(4, 8, 4) == 1  # yet one on every GPU
    assert parse_jobs_per_gpu("auto") is None and parse_jobs_per_gpu(3) == 3
    for bad in (0, "two", 1.5):
        with pytest.raises(ValueError, match="jobs_per_gpu"):
            parse_jobs_per_gpu(bad)
