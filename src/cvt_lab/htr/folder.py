"""``data=lines``: a line-level handwriting data set in the folder format of IAM / READ2016 / RIMES / LAM::

    <root>/images/<id>.<png|jpg|jpeg|tif|tiff|bmp>   one text line per image
    <root>/transcriptions.txt                         "<id> <text>" per line (the text may hold spaces)
    <root>/train.txt  val.txt  test.txt               the ids of each split, one per line (e.g. IAM's Aachen split)

The charset is the training split's characters (stored in the checkpoint with the model). Everything is checked
before training starts, each problem with one message: a split list or image missing, an id without transcription,
an empty or unreadable image, an evaluation line with a character outside the training charset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cvt_lab.data.base import DatasetNotFoundError
from cvt_lab.htr.batching import resize_to_height
from cvt_lab.htr.charset import Charset
from cvt_lab.htr.datamodule import SPLITS, LineDataModule, LineDataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TRANSCRIPTIONS = "transcriptions.txt"


def line_tensor(image: Image.Image, in_chans: int, height: int, invert: str = "auto") -> torch.Tensor:
    """A line image as the models read it: (C, height, width) in [0, 1], ink high (``invert``: ``auto`` inverts
    dark-on-light images, ``true`` / ``false`` always / never), resized to ``height`` with its aspect kept."""
    x = torch.from_numpy(np.asarray(image.convert("L" if in_chans == 1 else "RGB"), dtype=np.float32) / 255.0)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    if invert == "true" or (invert == "auto" and float(x.mean()) > 0.5):  # paper is light: ink to 1
        x = 1 - x
    return resize_to_height(x, height)


def read_transcriptions(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DatasetNotFoundError(f"data=lines: {path} is missing: it holds '<id> <text>' for every line")
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, _, text = line.partition(" ")
            out[key] = text
    return out


def read_split(root: Path, split: str) -> list[str]:
    path = root / f"{split}.txt"
    if not path.is_file():
        raise DatasetNotFoundError(f"data=lines: {path} is missing: list the ids of the {split} lines, one a line")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise DatasetNotFoundError(f"data=lines: {path} lists no lines")
    return ids


class LineFolderDataModule(LineDataModule):
    """Images are read (and resized to the line height) when a batch needs them; their sizes, for bucketing and for
    the checks, from the file headers at set-up."""

    def __init__(self, name: str = "lines", root: str | None = None, invert: str = "auto", **kwargs):
        if not root:
            raise DatasetNotFoundError("data=lines needs data.root=DIR (images/, transcriptions.txt, train.txt...)")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"data=lines: data.root={root} is not a directory")
        if str(invert) not in ("auto", "True", "False", "true", "false"):
            raise ValueError(f"data.invert={invert!r}: valid values are auto, true and false")
        self.invert = str(invert).lower()
        self.texts = read_transcriptions(self.root / TRANSCRIPTIONS)
        self.ids = {split: read_split(self.root, split) for split in SPLITS}
        for split, ids in self.ids.items():
            missing = [i for i in ids if i not in self.texts]
            if missing:
                raise ValueError(f"data=lines: line {missing[0]!r} of {self.root / (split + '.txt')} has no "
                                 f"transcription in {self.root / TRANSCRIPTIONS} ({len(missing)} such lines)")
        super().__init__(name=name, **kwargs)

    def build_charset(self) -> Charset:
        return Charset.from_texts(self.texts[i] for i in self.ids["train"])

    def line_name(self, split: str, i: int) -> str:
        return repr(self.ids[split][i])

    def image_path(self, key: str) -> Path:
        for suffix in IMAGE_SUFFIXES:
            path = self.root / "images" / f"{key}{suffix}"
            if path.is_file():
                return path
        raise DatasetNotFoundError(f"data=lines: no image for line {key!r} under {self.root / 'images'} "
                                   f"({'/'.join(IMAGE_SUFFIXES)})")

    def _size(self, path: Path) -> tuple[int, int]:
        if path.stat().st_size == 0:
            raise ValueError(f"data=lines: {path} is empty; replace the image or drop the line from its split list")
        try:
            with Image.open(path) as im:
                w, h = im.size
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"data=lines: cannot read {path} ({e}); replace it or drop the line") from None
        if w < 1 or h < 1:
            raise ValueError(f"data=lines: {path} has no pixels ({w}x{h})")
        return w, h

    def read(self, path: Path) -> torch.Tensor:
        try:
            with Image.open(path) as im:
                return line_tensor(im, self.in_chans, self.height, self.invert)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"data=lines: cannot read {path} ({e}); replace it or drop the line") from None

    def load(self) -> dict[str, LineDataset]:
        out = {}
        for split, ids in self.ids.items():
            paths = [self.image_path(i) for i in ids]
            sizes = [self._size(p) for p in paths]
            widths = [max(1, round(w * self.height / h)) for w, h in sizes]
            texts = [self.texts[i] for i in ids]
            out[split] = LineDataset(lambda j, paths=paths, texts=texts: (self.read(paths[j]), texts[j]), widths,
                                     texts)
        return out
