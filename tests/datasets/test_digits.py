"""scikit-learn's UCI digits as a data set: the fixed split, the pixel scale, the plugin, and
the error when scikit-learn is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from mfm_core.datasets.images.digits import DigitsDataset, load_digits_split
from mfm_core.errors import ConfigError
from mfm_core.registry import get_registry

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def test_the_held_out_split_is_every_fifth_image_and_the_splits_partition_the_data():
    bunch = sklearn_datasets.load_digits()
    train, test = DigitsDataset(split="train"), DigitsDataset(split="test")
    assert (len(train), len(test), len(DigitsDataset(split="all"))) == (1438, 359, 1797)
    held_out = np.arange(1797) % 5 == 4
    assert np.array_equal(test.labels, bunch.target[held_out])
    assert np.array_equal(train.labels, bunch.target[~held_out])
    for split in (train, test):
        assert sorted(set(split.labels.tolist())) == list(range(10))


def test_pixels_are_one_grey_channel_scaled_from_ink_0_16_to_minus_one_one():
    bunch = sklearn_datasets.load_digits()
    data = DigitsDataset(split="all")
    image, label = data[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and label == bunch.target[0]
    expected = np.rint(bunch.images[0] * 255 / 16) / 127.5 - 1
    assert np.allclose(image[0].numpy(), expected, atol=1e-6)
    pixels, _ = load_digits_split("all")
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    assert data.shape == (1, 8, 8) and data.num_classes == 10 and data.hflip is False
    drawn = data.sample(5, torch.Generator().manual_seed(0))
    assert drawn.shape == (5, 1, 8, 8) and drawn.min() >= -1 and drawn.max() <= 1


def test_registered_as_a_builtin_dataset():
    data = get_registry().create("dataset", "digits", {"split": "test"})
    assert len(data) == 359
    with pytest.raises(ConfigError, match=r"\$\.dataset\.split"):
        get_registry().create("dataset", "digits", {"split": "validation"})


def test_without_scikit_learn_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails
    with pytest.raises(ConfigError, match=r"scikit-learn.*pip install 'mfm\[digits\]'"):
        get_registry().create("dataset", "digits", {})
