"""Handwriting (cvt_lab.htr) with data and training: the line data modules (digit_lines, a lines folder), bad line
data refused before training, and the job's CER / WER and sample lines (in-process). The models, batching and
report alone are tests/unit/test_htr.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_config, read_results
from PIL import Image

from cvt_lab.htr.digit_lines import DigitLinesDataModule, split_indices
from cvt_lab.htr.folder import LineFolderDataModule


def test_digit_lines_use_each_source_digit_in_one_split_and_can_test_longer_lines():
    parts = split_indices(5000, 0)
    assert sum(len(p) for p in parts.values()) == 5000 and len(set(np.concatenate(list(parts.values())))) == 5000
    dm = DigitLinesDataModule(source="sklearn", train_lines=20, val_lines=4, test_lines=6, min_chars=2, max_chars=3,
                              test_min_chars=6, test_max_chars=7, image_size=32)
    dm.setup()
    train, test = dm.splits["train"], dm.splits["test"]
    digits = [len(t.replace(" ", "")) for t in train.texts], [len(t.replace(" ", "")) for t in test.texts]
    assert max(digits[0]) <= 3 and min(digits[1]) >= 6
    assert max(test.widths) > max(train.widths)
    image, text = train[0]
    assert image.shape[:2] == (1, 32) and image.shape[-1] == train.widths[0] and set(text) <= set("0123456789 ")


def write_folder(root, lines: dict[str, str], splits: dict[str, list[str]]) -> None:
    (root / "images").mkdir(parents=True)
    for key in lines:
        Image.fromarray(np.full((20, 60), 255, np.uint8)).save(root / "images" / f"{key}.png")
    (root / "transcriptions.txt").write_text("".join(f"{k} {t}\n" for k, t in lines.items()))
    for split, ids in splits.items():
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")


SPLITS = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}


def test_lines_folder_reads_lines_and_builds_the_charset_from_training(tmp_path):
    write_folder(tmp_path, {"a": "the cat", "b": "a hat", "c": "cat", "d": "hat"}, SPLITS)
    dm = LineFolderDataModule(root=str(tmp_path), image_size=32)
    dm.setup()
    assert dm.charset.chars == sorted(set("the cat" + "a hat"))
    image, text = dm.splits["train"][0]
    assert image.shape == (1, 32, 96) and text == "the cat" and float(image.max()) == 0  # white paper -> background 0


@pytest.mark.parametrize(("broken", "message"), [
    ("missing", "line 'd' of {root}/test.txt has no transcription"),
    ("charset", "line 'c' of the val split has character(s) ['z'] outside the charset of the training split"),
    ("empty", "{root}/images/b.png is empty"),
    ("unreadable", "cannot read {root}/images/b.png"),
])
def test_bad_line_data_is_one_clear_message_before_training(tmp_path, broken, message):
    from cvt_lab.train import JobError, run

    root = tmp_path / "lines"
    lines = {"a": "ab", "b": "ba", "c": "z" if broken == "charset" else "a", "d": "b"}
    write_folder(root, lines, SPLITS)
    if broken == "missing":
        (root / "transcriptions.txt").write_text("a ab\nb ba\nc a\n")
    if broken == "empty":
        (root / "images" / "b.png").write_bytes(b"")
    if broken == "unreadable":
        (root / "images" / "b.png").write_bytes(b"not a png")
    with pytest.raises(JobError) as failed:
        run(compose_config("experiment=htr", "data=lines", f"data.root={root}", "recipe.epochs=1"), tmp_path / "run")
    assert message.format(root=root) in str(failed.value) and "\n" not in str(failed.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


HTR_TINY = ("experiment=htr", "data.source=sklearn", "data.train_lines=48", "data.val_lines=8", "data.test_lines=8",
            "recipe.batch_size=16", "recipe.epochs=1", "trainer.enable_progress_bar=false", "model.depths=[1,1,1]",
            "model.dims=[16,32,32]", "model.heads=[1,2,2]")


@pytest.mark.parametrize(("model", "size"), [("htr_cvt", ()), ("htr_crnn", ("model.crnn_dims=[8,8,16,16]",
                                                                          "model.rnn_hidden=16"))])
def test_htr_job_records_cer_and_wer_and_writes_sample_lines(tmp_path, model, size):
    from cvt_lab.train import run

    record = run(compose_config(*HTR_TINY, f"model={model}", *size), tmp_path)
    results = read_results(tmp_path)
    assert record.status == "finished" and 0 <= results["test/cer"] and 0 <= results["test/wer"]
    assert results["val/cer"] is not None and results["test/acc1"] is None
    assert (tmp_path / "samples.png").stat().st_size > 0
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["charset"] == list("0123456789 ")
    if model == "htr_cvt":  # the line recognizer's own checkpoint evaluates to the same CER
        evaluated = run(compose_config(*HTR_TINY, f"model={model}", "mode=eval",
                                       f"checkpoint={tmp_path / 'checkpoints' / 'last.ckpt'}"), tmp_path / "eval")
        assert evaluated.test_cer == pytest.approx(record.test_cer)
