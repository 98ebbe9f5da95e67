"""Datasets: sources of noise and data samples."""

from mfm_core.datasets.file import FileDataset, load_points
from mfm_core.datasets.images import (
    Cifar10Dataset,
    ImageDataset,
    ImageFolderDataset,
    ImageNetNpzDataset,
)
from mfm_core.datasets.toy2d import (
    Checkerboard,
    Circles,
    EightGaussians,
    Gaussian,
    Moons,
    Spirals,
    Toy2D,
)

__all__ = [
    "Checkerboard",
    "Cifar10Dataset",
    "Circles",
    "EightGaussians",
    "FileDataset",
    "Gaussian",
    "ImageDataset",
    "ImageFolderDataset",
    "ImageNetNpzDataset",
    "Moons",
    "Spirals",
    "Toy2D",
    "load_points",
]
