"""The line data's epochs: Lightning tells the bucketing sampler (and so the augmentation and, with
``fresh_train_lines``, the composed lines) each new epoch, and every epoch's data is a function of (seed, epoch)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch

from cvt_lab.htr import build_cvt_line_recognizer
from cvt_lab.htr.digit_lines import DigitLinesDataModule, source_digits, split_indices
from cvt_lab.htr.module import LineRecognizer

TINY_CVT = dict(in_chans=1, img_size=32, depths=[1, 1, 1], dims=[8, 16, 16], heads=[1, 1, 1],
                embed_kernel=[7, 3, 3], embed_stride=[4, 2, 1], embed_padding=[2, 1, 1], cls_token=False,
                drop_path=0.0)


class FirstBatches(pl.Callback):
    """Each epoch's first training batch: its texts and its pixels."""

    def __init__(self):
        self.texts: list[list[str]] = []
        self.pixels: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            self.texts.append(list(batch.texts))
            self.pixels.append(batch.images.clone())


def first_batches(fresh: bool, seed: int = 0) -> FirstBatches:
    data = DigitLinesDataModule(source="sklearn", train_lines=24, val_lines=4, test_lines=4, min_chars=2,
                                max_chars=4, image_size=32, batch_size=8, seed=seed, fresh_train_lines=fresh,
                                augment_p=1.0)
    data.setup()
    model = build_cvt_line_recognizer(num_classes=data.charset.num_classes, **TINY_CVT)
    module = LineRecognizer(model, {"name": "test", "epochs": 2, "batch_size": 8}, data.charset.chars)
    seen = FirstBatches()
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[seen], accelerator="cpu")
    trainer.fit(module, datamodule=data)
    return seen


def test_each_epoch_gets_its_own_batches_and_augmentation_and_a_rerun_the_same():
    seen = first_batches(fresh=False)
    assert len(seen.pixels) == 2
    # a new epoch: another order of the same lines, or at least another augmentation of them
    assert seen.texts[0] != seen.texts[1] or not torch.equal(seen.pixels[0], seen.pixels[1])
    again = first_batches(fresh=False)
    assert again.texts == seen.texts and all(torch.equal(a, b) for a, b in zip(again.pixels, seen.pixels))


def test_fresh_training_lines_are_new_each_epoch_from_the_training_digits_only(monkeypatch):
    import cvt_lab.htr.digit_lines as digit_lines

    pools_used: list[set[int]] = []
    compose_line = digit_lines.compose_line

    def recording(digits, labels, pool, *args, **kwargs):
        pools_used.append(set(pool.tolist()))
        return compose_line(digits, labels, pool, *args, **kwargs)

    monkeypatch.setattr(digit_lines, "compose_line", recording)
    kwargs = dict(source="sklearn", train_lines=30, val_lines=4, test_lines=4, min_chars=3, max_chars=5,
                  image_size=32, augment_p=0.0)
    data = DigitLinesDataModule(fresh_train_lines=True, **kwargs)
    data.setup()
    train = data.splits["train"]
    epoch0 = list(train.texts)
    pools_used.clear()
    train.set_epoch(1)
    epoch1, widths1 = list(train.texts), list(train.widths)
    assert epoch1 != epoch0 and len(epoch1) == len(epoch0) == 30
    assert widths1 == [train[i][0].shape[-1] for i in range(len(train))]  # the sampler buckets by these
    train_pool = set(split_indices(len(source_digits("sklearn")[0]), data.split_seed)["train"].tolist())
    assert len(pools_used) == 30 and all(pool == train_pool for pool in pools_used)  # no val/test digit
    train.set_epoch(0)
    assert train.texts == epoch0  # a function of (seed, epoch): a resumed run sees what an uninterrupted one saw
    fixed = DigitLinesDataModule(fresh_train_lines=False, **kwargs)
    fixed.setup()
    fixed.splits["train"].set_epoch(1)
    assert fixed.splits["train"].texts == epoch0  # without fresh lines one set for every epoch
    assert fixed.splits["test"].texts == data.splits["test"].texts  # evaluation lines never change


def test_longer_evaluation_lines_apply_to_validation_too():
    data = DigitLinesDataModule(source="sklearn", train_lines=8, val_lines=6, test_lines=6, min_chars=2,
                                max_chars=3, test_min_chars=6, test_max_chars=7, image_size=32)
    data.setup()
    for split in ("val", "test"):
        assert min(len(t.replace(" ", "")) for t in data.splits[split].texts) >= 6
    assert np.max([len(t.replace(" ", "")) for t in data.splits["train"].texts]) <= 3
