"""Image data sets: downsampled ImageNet (npz), CIFAR-10 (pickles), folders of PNG / JPEG and
scikit-learn's UCI digits.

Each is an ``IndexedDataset``: ``dataset[i] -> (float32 (C, H, W) in [-1, 1], label)``.
"""

from mfm_core.datasets.images.base import ImageDataset
from mfm_core.datasets.images.cifar import Cifar10Dataset
from mfm_core.datasets.images.digits import DigitsDataset
from mfm_core.datasets.images.folder import ImageFolderDataset
from mfm_core.datasets.images.imagenet import ImageNetNpzDataset

__all__ = [
    "Cifar10Dataset",
    "DigitsDataset",
    "ImageDataset",
    "ImageFolderDataset",
    "ImageNetNpzDataset",
]
