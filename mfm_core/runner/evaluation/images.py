"""Images out: uint8 conversion, PNG files, and captioned grids (Pillow and numpy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mfm_core.runner.rundir.checkpoint import atomic_write

CAPTION_HEIGHT = 14
GAP = 4
MIN_SIZE = 32  # smaller images are enlarged (nearest neighbour) to at least this many pixels


def is_image_shape(shape: tuple[int, ...]) -> bool:
    """Samples of shape (C, H, W) with 1 or 3 channels are images."""
    return len(shape) == 3 and shape[0] in (1, 3)


def to_uint8(samples: torch.Tensor) -> np.ndarray:
    """Images (n, C, H, W) scaled to [-1, 1] -> uint8 (n, H, W, C), the layout of PNG files
    and of the ``arr_0`` that FID tools read."""
    pixels = ((samples.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255)
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def save_png(path: Path, image: np.ndarray) -> None:
    """One uint8 (H, W, C) image, written atomically."""
    atomic_write(path, lambda handle: _pil(image).save(handle, format="PNG"))


def tile(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """uint8 images (n, H, W, C) as one grid, ``columns`` wide (default: square), 1-pixel
    white lines between them."""
    n, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full(
        (rows * (height + 1) - 1, columns * (width + 1) - 1, channels), 255, dtype=np.uint8
    )
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = row * (height + 1), column * (width + 1)
        grid[top : top + height, left : left + width] = image
    return grid


def upscale(images: np.ndarray, min_size: int = MIN_SIZE) -> np.ndarray:
    """uint8 images (n, H, W, C) enlarged by the smallest whole factor that makes both sides
    at least ``min_size`` pixels, each pixel repeated (nearest neighbour: no blur)."""
    factor = max(1, math.ceil(min_size / min(images.shape[1:3])))
    return images.repeat(factor, axis=1).repeat(factor, axis=2)


def by_class(images: np.ndarray, labels: np.ndarray, num_classes: int, columns: int) -> np.ndarray:
    """uint8 images (n, H, W, C) with labels (n,) rearranged as ``num_classes`` rows of
    ``columns``: row k holds the first images of class k in order, and white cells where
    there are fewer than ``columns`` of them. For ``tile(..., columns)``."""
    cells = np.full((num_classes * columns, *images.shape[1:]), 255, dtype=np.uint8)
    for label in range(num_classes):
        chosen = images[np.asarray(labels) == label][:columns]
        cells[label * columns : label * columns + len(chosen)] = chosen
    return cells


def save_panels(
    path: Path,
    panels: list[tuple[str, np.ndarray]],
    columns: int | None = None,
    row_labels: Sequence[str] = (),
) -> None:
    """Grids of uint8 images side by side, each under its caption (e.g. a solver and its
    NFE), on white; a panel is as wide as its grid or its caption. Images smaller than
    ``MIN_SIZE`` pixels are enlarged by ``upscale``; ``columns``: images per row (default:
    square grids); ``row_labels``: a label left of each row of the grids (e.g. its class)."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    enlarged = [(caption, upscale(images)) for caption, images in panels]
    grids = [(caption, tile(images, columns)) for caption, images in enlarged]
    widths = [max(g.shape[1], math.ceil(draw.textlength(c))) for c, g in grids]
    margin = max((math.ceil(draw.textlength(label)) + GAP for label in row_labels), default=0)
    width = margin + sum(widths) + GAP * (len(grids) + 1)
    height = max(g.shape[0] for _, g in grids) + CAPTION_HEIGHT + 2 * GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if row_labels:
        cell = enlarged[0][1].shape[1] + 1  # a row of images and the white line below it
        for index, label in enumerate(row_labels):
            middle = CAPTION_HEIGHT + GAP + index * cell + cell // 2
            draw.text((GAP, middle), label, fill="black", anchor="lm")
    x = GAP + margin
    for (caption, grid), panel_width in zip(grids, widths, strict=True):
        draw.text((x, GAP // 2), caption, fill="black")
        canvas.paste(_pil(grid).convert("RGB"), (x, CAPTION_HEIGHT + GAP))
        x += panel_width + GAP
    atomic_write(path, lambda handle: canvas.save(handle, format="PNG"))
