"""data=digits_canvas: labels say where the digit is, splits are fixed, and the cell is independent of the digit."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from cvt_lab.config import AugmentConfig, canvas_classes
from cvt_lab.data import DigitsCanvasDataModule


def canvas(task: str = "class", grid: int = 3, **kwargs) -> DigitsCanvasDataModule:
    dm = DigitsCanvasDataModule(name="digits_canvas", num_classes=canvas_classes(task, grid), image_size=32,
                                task=task, grid=grid, **kwargs)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def class_position() -> DigitsCanvasDataModule:
    return canvas("class_position")


def ink_cell(images: torch.Tensor, grid: int, canvas_size: int = 32) -> torch.Tensor:
    """The cell (row-major) holding each image's ink: the digit is the only thing on a clean canvas."""
    cell = canvas_size // grid
    margin = (canvas_size - grid * cell) // 2
    ink = images[:, 0, margin:margin + grid * cell, margin:margin + grid * cell] > -0.9
    per_cell = ink.unflatten(1, (grid, cell)).unflatten(3, (grid, cell)).sum((2, 4)).flatten(1)
    return per_cell.argmax(1)


def test_labels_name_the_digit_and_the_cell_it_is_drawn_in(class_position):
    dm = class_position
    for split in (dm.train_set, dm.val_set, dm.test_set):
        images, labels = split.tensors
        assert images.shape[1:] == (3, 32, 32) and labels.max() < 90
        assert torch.equal(ink_cell(images, grid=3), labels % 9)  # position = the cell with the ink
    sizes = [len(s) for s in (dm.train_set, dm.val_set, dm.test_set)]
    assert sizes == [1257, 180, 360]  # the digits split: a test digit is never a training digit
    test_digits = dm.test_set.tensors[1] // 9
    assert torch.bincount(test_digits, minlength=10).min() >= 35  # stratified by digit


def test_each_task_labels_the_same_images(class_position):
    images, joint = class_position.train_set.tensors
    for task, expected in [("class", joint // 9), ("position", joint % 9)]:
        dm = canvas(task)
        assert torch.equal(dm.train_set.tensors[0], images) and torch.equal(dm.train_set.tensors[1], expected)


def test_splits_are_fixed_by_the_split_seed_alone(class_position):
    again = canvas("class_position", seed=7)  # the run's seed changes the training order, not the data
    for a, b in zip((class_position.train_set, class_position.test_set), (again.train_set, again.test_set)):
        assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    other = canvas("class_position", split_seed=1)
    assert not torch.equal(other.test_set.tensors[1], class_position.test_set.tensors[1])


def test_position_cannot_be_predicted_from_the_digit(class_position):
    """Every digit visits every cell equally often: knowing the digit (its identity, or its pixels) says
    nothing about the cell, so task=position needs to see where the ink is."""
    _, joint = class_position.train_set.tensors
    digit, cell = joint // 9, joint % 9
    counts = torch.zeros(10, 9).index_put_((digit, cell), torch.ones(len(joint)), accumulate=True)
    assert (counts.amax(1) - counts.amin(1)).max() <= 1  # balanced within every digit
    onehot = torch.nn.functional.one_hot(digit, 10).numpy()
    _, test_joint = class_position.test_set.tensors
    test_onehot = torch.nn.functional.one_hot(test_joint // 9, 10).numpy()
    accuracy = LogisticRegression(max_iter=200).fit(onehot, cell.numpy()).score(test_onehot, (test_joint % 9).numpy())
    assert accuracy < 1 / 9 + 0.05  # chance is 1/9


def test_clutter_and_noise_keep_the_labels_and_stay_in_range():
    clean, noisy = canvas("position", grid=2, digit_size=16), canvas("position", grid=2, digit_size=16, clutter=3,
                                                                     noise=0.1)
    assert torch.equal(clean.test_set.tensors[1], noisy.test_set.tensors[1])
    assert not torch.equal(clean.test_set.tensors[0], noisy.test_set.tensors[0])
    assert noisy.test_set.tensors[0].abs().max() <= 1.0


def test_no_affine_jitter_and_bad_settings_say_what_to_change():
    shift = AugmentConfig(affine_translate=0.1, affine_degrees=10, affine_scale=0.1, re_prob=0.25)
    kept = DigitsCanvasDataModule(name="digits_canvas", num_classes=9, task="position", augment=shift).augment
    assert (kept.affine_translate, kept.affine_degrees, kept.affine_scale, kept.re_prob) == (0, 0, 0, 0.25)
    with pytest.raises(ValueError, match="data.num_classes=10 but data.task=position"):
        DigitsCanvasDataModule(name="digits_canvas", num_classes=10, task="position")
    with pytest.raises(ValueError, match="unknown data.task='where'"):
        canvas_classes("where", 3)
    with pytest.raises(ValueError, match="does not fit a cell"):
        canvas("class", grid=3, digit_size=16)
