"""Datasets: sources of noise and data samples."""

from mfm_core.datasets.file import FileDataset, load_points
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
    "Circles",
    "EightGaussians",
    "FileDataset",
    "Gaussian",
    "Moons",
    "Spirals",
    "Toy2D",
    "load_points",
]
