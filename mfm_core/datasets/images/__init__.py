"""Image data sets: downsampled ImageNet (npz), CIFAR-10 (pickles) and folders of PNG / JPEG.

Each is an ``IndexedDataset``: ``dataset[i] -> (float32 (C, H, W) in [-1, 1], label)``.
"""

from mfm_core.datasets.images.base import ImageDataset
from mfm_core.datasets.images.cifar import Cifar10Dataset
from mfm_core.datasets.images.folder import ImageFolderDataset
from mfm_core.datasets.images.imagenet import ImageNetNpzDataset

__all__ = ["Cifar10Dataset", "ImageDataset", "ImageFolderDataset", "ImageNetNpzDataset"]
