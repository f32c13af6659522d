"""A PNG of sample test lines with their ground truth and prediction (the run directory's ``samples.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def save_samples(samples: list[tuple[torch.Tensor, str, str]], path: Path) -> Path:
    """One row per line: the image (ink dark, as on paper), then ``gt`` and ``pred`` (red when they differ)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the job may run anywhere
    import matplotlib.pyplot as plt

    n = len(samples)
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.1 * n), squeeze=False)
    for ax, (image, truth, pred) in zip(axes[:, 0], samples):
        ax.imshow(1 - image.float().mean(0).numpy(), cmap="gray", vmin=0, vmax=1, aspect="equal")
        ax.set_axis_off()
        ax.set_title(f"gt: {truth!r}   pred: {pred!r}", fontsize=9, loc="left",
                     color="black" if pred == truth else "tab:red")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def log_samples(logger: Any, path: Path) -> None:
    """The sample image to W&B (``test/samples``) when the run logs there; other loggers keep the file only."""
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        logger.log_image(key="test/samples", images=[str(path)])
