"""What every image data set shares: uint8 pixels in, float32 in [-1, 1] out."""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np
import torch


def to_float(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels (..., C, H, W) -> float32 ``x / 127.5 - 1``: 0 -> -1, 255 -> 1 exactly."""
    return torch.from_numpy(np.array(pixels, dtype=np.float32)) / 127.5 - 1.0


def existing_dir(root: str, expected: str) -> Path:
    """``root`` as a Path; a clear error when it is not a directory."""
    if not root:
        raise ValueError(f"root is not set; expected a directory holding {expected} (data.root)")
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise ValueError(f"data root {str(path)!r} {what}; expected a directory holding {expected}")
    return path


class ImageDataset(abc.ABC):
    """An ``IndexedDataset`` of images: ``dataset[i] -> (float32 (C, H, W) in [-1, 1], label)``.

    Subclasses set ``shape``, ``num_classes`` and ``hflip``, and implement ``__len__`` and
    ``pixels(indices) -> (uint8 (n, C, H, W), int64 labels (n,))``. Labels are -1 when the
    data set has none. ``sample(n, generator)`` draws n items uniformly with replacement.
    """

    shape: tuple[int, int, int]
    num_classes: int | None
    hflip: bool

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def pixels(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (n, C, H, W) and int64 labels (n,) at ``indices`` (n,)."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} images")
        images, labels = self.pixels(np.array([index % len(self)]))
        return to_float(images[0]), int(labels[0])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Items at ``indices`` in one read (a ``DataLoader`` calls this for each batch)."""
        images, labels = self.pixels(np.asarray(indices, dtype=np.int64))
        return list(zip(to_float(images), labels.tolist(), strict=True))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        indices = torch.randint(len(self), (n,), generator=generator).numpy()
        return to_float(self.pixels(indices)[0])
