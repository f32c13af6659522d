"""Everything a job builds from its config: the model (with its checkpoint), the data, the Lightning module, the
logger, the callbacks and the Trainer. Each by ``hydra.utils.instantiate`` of its config group; a bad-input
error raised while building comes out as one :class:`~cvt_lab.errors.JobError` naming the group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from cvt_lab.config import trainer_args_set
from cvt_lab.errors import JobError, as_job_error
from cvt_lab.rundir import RunDir, checkpoint_file


def image_size_of(cfg: DictConfig) -> int:
    """The resolution a job trains, evaluates and predicts at: the recipe's, else the model's."""
    return int(cfg.recipe.image_size or cfg.model.img_size)


def build(node: DictConfig, group: str, **kwargs: Any) -> Any:
    """``instantiate(node)``; a bad-input error raised while building comes out as one message naming the group."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        error = as_job_error(e)
        raise (JobError(f"{group}: {error}") if isinstance(error, JobError) else error) from None


def model_from_config(cfg: DictConfig) -> Any:
    """The model of ``cfg.model`` with the weights of ``checkpoint=`` (any format, or a run directory: its last
    checkpoint). A checkpoint trained for another class count is refused where the job cannot replace the head
    (``mode=eval``, ``mode=predict``)."""
    model = build(cfg.model, "model")
    if cfg.checkpoint:
        from cvt_lab.checkpoint.load import load_checkpoint

        loaded = load_checkpoint(model, checkpoint_file(cfg.checkpoint))
        if cfg.mode in ("eval", "predict") and loaded.head_replaced:
            raise JobError(f"checkpoint={cfg.checkpoint} was trained for another number of classes than "
                           f"data={cfg.data.name} ({cfg.data.num_classes}); using it needs its own head: "
                           "pick the matching data (or data.num_classes), or fine-tune it with mode=train")
    return model


def datamodule_from_config(cfg: DictConfig) -> Any:
    """The ``data`` group's LightningDataModule at the job's image size, with the recipe's batch and augmentation."""
    mixup = cfg.recipe.mixup > 0 or cfg.recipe.cutmix > 0
    return build(cfg.data, "data", batch_size=cfg.recipe.batch_size, image_size=image_size_of(cfg),
                 augment=OmegaConf.to_object(cfg.recipe.augment), drop_last=mixup, seed=cfg.seed)


def module_from_config(cfg: DictConfig, model: Any) -> Any:
    """The Lightning module that trains and evaluates ``model`` with the recipe."""
    from cvt_lab.module import ImageClassifier

    return ImageClassifier(model, OmegaConf.to_object(cfg.recipe), num_classes=cfg.data.num_classes,
                           model_config=OmegaConf.to_container(cfg.model, resolve=True))


def logger_from_config(cfg: DictConfig, run_dir: Path, overrides: list[str], owner: bool) -> Any:
    """The ``logger`` group's experiment logger, writing into the run directory; it records the resolved config."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = build(cfg.logger, "logger", _recursive_=False, _convert_="all", save_dir=str(run_dir),
                   name=cfg.logger.name or ",".join(overrides) or "default", run_config=resolved, owns_run_dir=owner)
    if cfg.logger.kind != "wandb":
        logger.log_hyperparams(resolved)
    return logger


def build_callbacks(cfg: DictConfig, ckpt_dir: Path) -> list[Any]:
    """The ``callbacks`` group's entries (those not null), each by ``instantiate``; ModelCheckpoints write into
    ``ckpt_dir``, where the run resumes from."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    callbacks = []
    for name, node in cfg.callbacks.items():
        if node is None:
            continue
        group = f"callbacks.{name}"
        try:
            target = get_class(node._target_)
        except (ImportError, ValueError) as e:
            raise JobError(f"{group}: _target_={node._target_!r} is not a class that can be imported ({e})") from None
        kwargs = {"dirpath": str(ckpt_dir)} if issubclass(target, ModelCheckpoint) else {}
        try:
            callbacks.append(build(node, group, **kwargs))
        except TypeError as e:  # an argument the callback does not take
            raise JobError(f"{group}: {e}; see {node._target_}'s arguments") from None
    return callbacks


def trainer_node(cfg: DictConfig) -> DictConfig:
    """``cfg.trainer`` without the arguments left at Lightning's defaults: those stay unset, so Lightning's
    ``PL_TRAINER_*`` environment variables can still supply them."""
    return OmegaConf.create(trainer_args_set(OmegaConf.to_container(cfg.trainer, resolve=True)))


def trainer_from_config(cfg: DictConfig, run_dir: RunDir | Path, **kwargs: Any) -> Any:
    """The Lightning Trainer of ``cfg.trainer``, rooted in the run directory; ``kwargs``: the job's own arguments
    (logger, callbacks, ...)."""
    return build(trainer_node(cfg), "trainer", default_root_dir=str(Path(run_dir)), **kwargs)
