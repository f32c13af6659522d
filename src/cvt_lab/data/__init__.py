"""LightningDataModules: digits (default, offline), synthetic, imagefolder and torchvision sets."""

from cvt_lab.data.base import DatasetNotFoundError, ImageDataModule
from cvt_lab.data.files import ImageFolderDataModule, TorchvisionDataModule
from cvt_lab.data.memory import DigitsDataModule, SyntheticDataModule

__all__ = [
    "DatasetNotFoundError",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "SyntheticDataModule",
    "TorchvisionDataModule",
]
