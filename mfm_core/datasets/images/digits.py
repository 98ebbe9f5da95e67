"""The UCI handwritten digits that scikit-learn ships inside its package: 1797 grey 8x8
images of the digits 0..9, read without any download (the optional extra ``digits``)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from mfm_core.datasets.images.base import ImageDataset

NUM_CLASSES = 10
SHAPE = (1, 8, 8)
HELD_OUT_EVERY = 5
"""Image ``i`` of ``sklearn.datasets.load_digits()`` is held out when ``i % 5 == 4``: 359
held-out and 1438 training images, every class in both (the file is not sorted by class)."""
MAX_INK = 16  # the UCI pixels count ink in 4x4 blocks of a 32x32 bitmap: 0..16


def load_digits_split(split: Literal["train", "test", "all"]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, 1, 8, 8), ``round(ink * 255 / 16)`` (0: no ink, 255: full ink), and
    int64 labels (n,) of one split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ValueError(
            "the digits data set needs scikit-learn, which is not installed: "
            "pip install 'mfm[digits]' (or pip install scikit-learn)"
        ) from exc
    bunch = load_digits()
    ink = np.asarray(bunch.images, dtype=np.float64)
    pixels = np.rint(ink * (255 / MAX_INK)).astype(np.uint8)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    held_out = np.arange(len(labels)) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    keep = {"train": ~held_out, "test": held_out, "all": np.ones_like(held_out)}[split]
    return pixels[keep], labels[keep]


class DigitsDataset(ImageDataset):
    """scikit-learn's copy of the UCI digits: ``split = "train"`` (1438 images), ``"test"``
    (the 359 held-out images, index ``i % 5 == 4`` in ``load_digits()``) or ``"all"``
    (1797). Items are ``(float32 (1, 8, 8) in [-1, 1], label 0..9)``, -1 for no ink and 1 for
    full ink; one grey channel. Never flipped (a mirrored digit is another shape).

    Args:
        split: which images to use: "train" (1438), "test" (359 held out) or "all" (1797).
    """

    def __init__(self, *, split: Literal["train", "test", "all"] = "train") -> None:
        self.images, self.labels = load_digits_split(split)
        self.shape = SHAPE
        self.num_classes = NUM_CLASSES
        self.hflip = False

    def __len__(self) -> int:
        return len(self.images)

    def pixels(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.images[indices], self.labels[indices]
