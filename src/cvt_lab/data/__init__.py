"""LightningDataModules: digits (default, offline), digits on a canvas, synthetic, imagefolder and torchvision sets."""

from cvt_lab.data.base import DatasetNotFoundError, ImageDataModule
from cvt_lab.data.canvas import DigitsCanvasDataModule
from cvt_lab.data.files import ImageFolderDataModule, TorchvisionDataModule
from cvt_lab.data.memory import DigitsDataModule, SyntheticDataModule

__all__ = [
    "DatasetNotFoundError",
    "DigitsCanvasDataModule",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "SyntheticDataModule",
    "TorchvisionDataModule",
]
