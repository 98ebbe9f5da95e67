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


def test_class_rows_are_labelled_left_of_the_grids(tmp_path):
    from PIL import Image

    from mfm_core.runner.evaluation.images import CAPTION_HEIGHT, GAP, save_panels

    pictures = np.full((6, 8, 8, 1), 255, dtype=np.uint8)  # white: only text is dark
    save_panels(tmp_path / "plain.png", [("data", pictures)], columns=2)
    save_panels(tmp_path / "rows.png", [("data", pictures)], 2, ["class 0", "class 1", "class 2"])
    plain = np.asarray(Image.open(tmp_path / "plain.png").convert("L"))
    rows = np.asarray(Image.open(tmp_path / "rows.png").convert("L"))
    margin = rows.shape[1] - plain.shape[1]
    assert margin > 30 and rows.shape[0] == plain.shape[0]
    cell = 32 + 1  # 8 pixels enlarged to 32, and the white line
    for row in range(3):
        middle = CAPTION_HEIGHT + GAP + row * cell + cell // 2
        band = rows[middle - 4 : middle + 4, :margin]
        assert (band < 128).any(), f"no label left of row {row}"
    assert (rows[:, margin:] == plain).all()  # the grids themselves are unchanged
