"""Picture helpers: nearest-neighbour enlargement and one row per class."""

from __future__ import annotations

import numpy as np

from mfm_core.runner.evaluation.images import by_class, tile, upscale


def test_upscale_repeats_each_pixel_by_the_smallest_factor_reaching_the_minimum():
    images = np.arange(2 * 8 * 8 * 1, dtype=np.uint8).reshape(2, 8, 8, 1)
    big = upscale(images, min_size=30)  # 8 -> 32: factor 4
    assert big.shape == (2, 32, 32, 1)
    assert (big[1, 4 * 3 : 4 * 4, 4 * 5 : 4 * 6, 0] == images[1, 3, 5, 0]).all()
    same = np.zeros((1, 40, 40, 3), dtype=np.uint8)
    assert np.array_equal(upscale(same, min_size=32), same)  # large enough already


def test_by_class_puts_the_first_images_of_class_k_in_row_k_and_white_where_missing():
    images = np.stack([np.full((2, 2, 1), value, np.uint8) for value in (10, 20, 30, 40, 50)])
    labels = np.array([2, 0, 2, 2, 0])
    cells = by_class(images, labels, num_classes=3, columns=2)
    assert cells.shape == (6, 2, 2, 1)
    assert [int(c[0, 0, 0]) for c in cells] == [20, 50, 255, 255, 10, 30]
    grid = tile(cells, columns=2)
    assert grid.shape == (3 * 3 - 1, 2 * 3 - 1, 1)
    assert grid[0, 0, 0] == 20 and grid[6, 3, 0] == 30
