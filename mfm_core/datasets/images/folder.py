"""A directory of PNG / JPEG files, class subfolders as labels, read with Pillow on demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mfm_core.datasets.images.base import ImageDataset, existing_dir
from mfm_core.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")
EXPECTED = "images (.png, .jpg, .jpeg) in class subfolders root/<class>/, or directly in root"


def _images_in(directory: Path, recursive: bool) -> list[Path]:
    found = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(p for p in found if p.suffix.lower() in EXTENSIONS and p.is_file())


def load_image(path: Path, resolution: int) -> np.ndarray:
    """uint8 (3, resolution, resolution): RGB, the centred square crop, resized (bicubic)."""
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path} is not a readable image ({error}); remove or replace it") from None
    width, height = image.size
    if (width, height) != (resolution, resolution):
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize(
            (resolution, resolution), Image.Resampling.BICUBIC, reducing_gap=3.0
        )
    return np.asarray(image).transpose(2, 0, 1)


class ImageFolderDataset(ImageDataset):
    """Images under ``root``, as ``(float32 (3, resolution, resolution) in [-1, 1], label)``.

    ``root/<class>/**/<image>`` gives labels 0..C-1 in the sorted order of the class folder
    names (``classes``); images directly in ``root`` (and no class folders with images) are an
    unlabelled data set (``num_classes = None``, labels -1). Folders starting with a dot are
    skipped. Each image is read when needed, converted to RGB (an alpha channel is dropped),
    cropped to its centred square and resized to ``resolution`` with bicubic filtering (after
    box reduction when shrinking by a large factor); images already of that size are used as
    they are.

    Args:
        root: the directory of images, one subfolder per class; unset, data.root.
        resolution: the side in pixels every image is cropped square and resized to.
        hflip: whether images are flipped left to right at random.
    """

    def __init__(self, *, root: str, resolution: int, hflip: bool = True) -> None:
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        directory = existing_dir(root, EXPECTED)
        loose = _images_in(directory, recursive=False)
        folders = sorted(
            p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        per_class = {folder.name: _images_in(folder, recursive=True) for folder in folders}
        if loose and any(per_class.values()):
            raise ValueError(
                f"{directory} holds both class folders and images of its own "
                f"(e.g. {loose[0].name}); expected {EXPECTED}"
            )
        if loose:
            self.classes: list[str] = []
            self.files = loose
            labels = [-1] * len(loose)
        else:
            empty = [name for name, files in per_class.items() if not files]
            if not per_class or empty:
                what = f"class folders {empty} hold no images" if empty else "no images found"
                raise ValueError(f"{directory}: {what}; expected {EXPECTED}")
            self.classes = list(per_class)
            self.files = [f for files in per_class.values() for f in files]
            labels = [c for c, files in enumerate(per_class.values()) for _ in files]
        self.labels = np.array(labels, dtype=np.int64)
        self.resolution = resolution
        self.shape = (3, resolution, resolution)
        self.num_classes = len(self.classes) or None
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.files)

    def verify(self) -> None:
        """Raise :class:`DataError` naming the first file that is not a readable image (each
        file's structure and checksums are read, its pixels are not decoded)."""
        for path in self.files:
            try:
                with Image.open(path) as opened:
                    opened.verify()
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                raise DataError(
                    f"{path} is not a readable image ({error}); remove or replace it"
                ) from None

    def pixels(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.stack([load_image(self.files[i], self.resolution) for i in indices])
        return images, self.labels[indices]
