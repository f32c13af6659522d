"""The one way to compose cvt_lab's configs outside the command line: plan, tests and benchmarks use it.

    register_configs()                       # schemas and resolvers; every process that composes or runs a job
    compose(*overrides)                      # the config a job's task gets for ``python -m cvt_lab OVERRIDES``
    compose(*overrides, hydra=True)          # (task config, full config with its hydra node); Hydra's runtime set
    with hydra_session() as hydra: ...       # Hydra initialised on conf/, as the app is (sweep composition)

Quick runs are config too: ``debug=quick`` (a few batches of the default run) and ``debug=tiny`` (two batches of
synthetic data), conf/debug/.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cvt_lab.config import CRNNConfig, Config, DigitsCanvasConfig, LinesConfig, canvas_classes, trainer_config
from cvt_lab.identity import job_dirname
from cvt_lab.paths import config_dir

VERSION_BASE = "1.3"


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore and cvt_lab's config resolvers (called before the app
    composes its config, and in every process that runs a job)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    trainer_config()  # Config's trainer schema, built from Lightning's signature
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="digits_canvas_schema", node=DigitsCanvasConfig)
    cs.store(group="data", name="lines_schema", node=LinesConfig)
    cs.store(group="model", name="htr_crnn_schema", node=CRNNConfig)
    OmegaConf.register_new_resolver("cvt_lab.canvas_classes", canvas_classes, replace=True)
    # Sweep job directories: the overrides, plus a short id of the checkpoint's contents (conf/config.yaml).
    OmegaConf.register_new_resolver("cvt_lab.job_dirname", job_dirname, replace=True)


@contextmanager
def hydra_session(job_name: str = "cvt_lab") -> Iterator[Any]:
    """Hydra initialised on cvt_lab's configs, as ``python -m cvt_lab`` does; yields Hydra's app object."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=VERSION_BASE, job_name=job_name):
        yield GlobalHydra.instance().hydra


def compose(*overrides: str, hydra: bool = False) -> Any:
    """The app's config for ``overrides``, as the task gets it. ``hydra=True`` also sets Hydra's runtime config
    (experiments read ``${hydra:runtime.choices...}``) and returns ``(cfg, composed)``, ``composed`` with its
    ``hydra`` node."""
    from hydra import compose as hydra_compose
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with hydra_session():
        cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)
    if not hydra:
        return cfg
    HydraConfig.instance().set_config(cfg)
    task_cfg = cfg.copy()
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg, cfg

