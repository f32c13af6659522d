"""Digits on a canvas: scikit-learn's digits placed in the cells of a grid on a larger image, so that a task
can be about what the digit is, where it is, or both (CPU-scale stand-in for the paper's ablations).

Each source digit (the same fixed stratified 70/10/20 split as ``data=digits``, so a test digit is never a
training digit) is drawn ``copies`` times, each time into one cell of a ``grid`` x ``grid`` grid with a
random offset inside the cell. Cells are dealt per digit class from shuffled rounds of every cell, so the
cell is independent of the digit (every class visits every cell equally often): ``task=position`` cannot be
solved by recognising the digit, and ``task=class`` cannot by looking at one place. ``clutter`` adds
fragments of random digits of the same split anywhere on the canvas, ``noise`` Gaussian pixel noise.
Everything is drawn from ``split_seed`` alone: the same tensors for every run and seed.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from cvt_lab.config import canvas_classes
from cvt_lab.data.base import derived_seed
from cvt_lab.data.memory import TensorImageDataModule, digits_splits


def balanced_cells(classes: torch.Tensor, cells: int, generator: torch.Generator) -> torch.Tensor:
    """A cell for each sample such that, within every class, the cells come in shuffled rounds of all of
    them: each (class, cell) pair occurs equally often (up to one per class), whatever the class sizes."""
    out = torch.empty_like(classes)
    for c in classes.unique():
        where = (classes == c).nonzero().flatten()
        rounds = -(-len(where) // cells)
        deck = torch.cat([torch.randperm(cells, generator=generator) for _ in range(rounds)])
        out[where[torch.randperm(len(where), generator=generator)]] = deck[: len(where)]
    return out


def draw_canvas(digits: torch.Tensor, cells: torch.Tensor, canvas_size: int, grid: int, generator: torch.Generator,
                clutter: int = 0, noise: float = 0.0) -> torch.Tensor:
    """(N, 1, canvas, canvas) images in [0, 1]: digit i (N, 1, d, d) in cell ``cells[i]`` (row-major) at a
    random offset inside the cell, ``clutter`` random quarter-digit fragments of other digits, then noise."""
    n, _, d, _ = digits.shape
    cell = canvas_size // grid
    if d > cell:
        raise ValueError(f"a {d}-px digit does not fit a cell of {cell} px (data.canvas_size={canvas_size}, "
                         f"data.grid={grid}); use a larger canvas, a smaller grid or data.digit_size")
    margin = (canvas_size - grid * cell) // 2
    images = torch.zeros(n, 1, canvas_size, canvas_size)
    jitter = torch.randint(cell - d + 1, (n, 2), generator=generator)
    top = margin + (cells // grid) * cell + jitter[:, 0]
    left = margin + (cells % grid) * cell + jitter[:, 1]
    if clutter:
        f = d // 2
        source = torch.randint(n, (n, clutter), generator=generator)
        corner = torch.randint(2, (n, clutter, 2), generator=generator) * f
        where = torch.randint(canvas_size - f + 1, (n, clutter, 2), generator=generator)
        for i in range(n):
            for k in range(clutter):
                (a, b), (y, x) = corner[i, k].tolist(), where[i, k].tolist()
                piece = digits[source[i, k], :, a:a + f, b:b + f]
                images[i, :, y:y + f, x:x + f] = torch.maximum(images[i, :, y:y + f, x:x + f], piece)
    for i, (y, x) in enumerate(zip(top.tolist(), left.tolist())):
        images[i, :, y:y + d, x:x + d] = torch.maximum(images[i, :, y:y + d, x:x + d], digits[i])
    if noise:
        images = images + noise * torch.randn(images.shape, generator=generator)
    return images.clamp(0, 1)


class DigitsCanvasDataModule(TensorImageDataModule):
    """scikit-learn's digits on a ``canvas_size`` canvas in the cells of a ``grid`` x ``grid`` grid; the label
    is the digit (``task=class``), its cell (``position``) or both (``class_position``: digit * grid**2 + cell).

    The recipe's affine jitter (``recipe.augment.affine_*``, made for one centred digit) is not applied: here
    the placement varies the digit's position already, a shift could carry a digit into another cell (the
    label of the position tasks), and rotation or zoom about the canvas centre moves every off-centre digit
    (measured with the CPU-scale DeiT's earlier, normalized token embedding: 50% on task=class in 15 epochs with
    it, 94% without). Random
    erasing, where the recipe sets it, still applies."""

    def __init__(self, *args, task: str = "class", canvas_size: int = 32, grid: int = 3, digit_size: int = 8,
                 copies: int = 1, clutter: int = 0, noise: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.num_classes != canvas_classes(task, grid):
            raise ValueError(f"data.num_classes={self.num_classes} but data.task={task} on a {grid}x{grid} grid has "
                             f"{canvas_classes(task, grid)} labels; leave data.num_classes at its default")
        self.task, self.canvas_size, self.grid, self.digit_size = task, canvas_size, grid, digit_size
        self.copies, self.clutter, self.noise = copies, clutter, noise
        self.augment = dataclasses.replace(self.augment, affine_degrees=0.0, affine_translate=0.0, affine_scale=0.0)

    def label(self, digits: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        return {"class": digits, "position": cells, "class_position": digits * self.grid**2 + cells}[self.task]

    def load(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        digits, classes, (train, val, test) = digits_splits(self.split_seed)
        if self.digit_size != 8:
            digits = F.interpolate(digits, size=self.digit_size, mode="bilinear", align_corners=False).clamp(0, 1)

        def split(number: int, members) -> TensorDataset:
            # Cells and drawing from generators of their own: clutter and noise never change the labels.
            cells_g, draw_g = (torch.Generator().manual_seed(derived_seed(self.split_seed, number, k)) for k in (0, 1))
            members = torch.as_tensor(members).repeat(self.copies)
            cells = balanced_cells(classes[members], self.grid**2, cells_g)
            images = draw_canvas(digits[members], cells, self.canvas_size, self.grid, draw_g, self.clutter, self.noise)
            return TensorDataset(self._to_model_input(images), self.label(classes[members], cells))

        return split(0, train), split(1, val), split(2, test)
