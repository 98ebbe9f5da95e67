"""The official downsampled ImageNet (Chrabaszcz et al. 2017) ``.npz`` batches, memory-mapped.

ImageNet 64x64 holds about 15 GB of pixels, so it is converted once into one uint8 ``.npy``
of shape (N, 3, H, W) plus the labels, which every process and DataLoader worker maps
read-only (the operating system shares the pages) instead of holding its own copy.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from mfm_core.datasets.images.base import ImageDataset, existing_dir
from mfm_core.datasets.images.cache import cached_arrays

EXPECTED = (
    "the official downsampled ImageNet files train_data_batch_1.npz .. "
    "train_data_batch_10.npz and val_data.npz"
)
NUM_CLASSES = 1000
OFFICIAL_TRAIN_BATCHES = 10
_BATCH = re.compile(r"train_data_batch_(\d+)\.npz")


class ImageNetNpzDataset(ImageDataset):
    """Downsampled ImageNet at ``resolution`` (32 or 64) from the npz batches under ``root``.

    ``split = "train"`` reads ``train_data_batch_1.npz`` .. ``train_data_batch_10.npz``,
    ``"val"`` reads ``val_data.npz``; the files may also sit in one subdirectory of ``root``
    (as unpacked from ``Imagenet64_train_npz.zip``). Each holds ``data``, uint8 rows of
    ``3 * resolution^2`` pixels in CHW order (all red, then green, then blue), and ``labels``
    1..1000, which become 0..999. Items are ``(float32 (3, H, W) in [-1, 1], label)``.

    The first use converts the split into ``<cache_dir>/imagenet<res>-<split>-images.npy`` and
    ``-labels.npy`` (one batch file at a time), guarded by a file lock so that concurrent
    ranks convert once. ``cache_dir`` defaults to ``<root>/.mfm-cache`` if that exists or
    ``root`` is writable, else to ``$XDG_CACHE_HOME/mfm/`` (``~/.cache/mfm/``) plus a hash of
    ``root``.
    Changing a source file (its size or modification time) makes the cache convert again.

    Args:
        root: the directory holding the npz batches; unset, data.root.
        resolution: the image size in pixels, 32 or 64.
        split: which part to read: "train" or "val".
        hflip: whether images are flipped left to right at random.
        cache_dir: the directory the converted arrays are cached in; unset, .mfm-cache under root,
            or the user cache when root is read-only.
    """

    def __init__(
        self,
        *,
        root: str,
        resolution: int,
        split: Literal["train", "val"] = "train",
        hflip: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        directory = existing_dir(root, EXPECTED)
        sources = _sources(directory, split)
        self.shape = (3, resolution, resolution)
        self.num_classes = NUM_CLASSES
        self.hflip = hflip
        cache = _cache_dir(directory, cache_dir)
        rows = {source: _check_header(source, resolution) for source in sources}
        self.images_path, self.labels_path = cached_arrays(
            cache,
            f"imagenet{resolution}-{split}",
            sources,
            lambda images, labels: _convert(rows, self.shape, images, labels),
        )
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._length = len(self._arrays()[1])

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The memory maps, opened on first use in each process (they are not pickled)."""
        if self._images is None or self._labels is None:
            self._images = np.load(self.images_path, mmap_mode="r")
            self._labels = np.load(self.labels_path, mmap_mode="r")
        return self._images, self._labels

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None, "_labels": None}

    def __len__(self) -> int:
        return self._length

    def pixels(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self._arrays()
        return images[indices], np.asarray(labels[indices], dtype=np.int64)


def _sources(root: Path, split: str) -> list[Path]:
    """The split's npz files under ``root`` or in one of its direct subdirectories."""
    for directory in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if split == "val" and (directory / "val_data.npz").is_file():
            return [directory / "val_data.npz"]
        if split == "train" and (batches := _train_batches(directory)):
            return batches
    name = "val_data.npz" if split == "val" else "train_data_batch_*.npz"
    raise ValueError(f"no {name} under {root} (nor in its subdirectories); expected {EXPECTED}")


def _train_batches(directory: Path) -> list[Path]:
    """``train_data_batch_<n>.npz`` in ``directory`` by n, which must run from 1 without gaps."""
    numbers = {
        int(m.group(1)): p
        for p in directory.iterdir()
        if (m := _BATCH.fullmatch(p.name)) and p.is_file()
    }
    missing = sorted(set(range(1, max(numbers, default=0) + 1)) - set(numbers))
    if missing:
        raise ValueError(
            f"{directory} has train_data_batch_{max(numbers)}.npz but not "
            f"{', '.join(f'train_data_batch_{n}.npz' for n in missing)}; expected {EXPECTED}"
        )
    if 0 < len(numbers) < OFFICIAL_TRAIN_BATCHES:
        warnings.warn(
            f"{directory} holds {len(numbers)} of the {OFFICIAL_TRAIN_BATCHES} official train "
            "batches; training on those",
            stacklevel=4,
        )
    return [numbers[n] for n in sorted(numbers)]


def _cache_dir(root: Path, cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    inside = root / ".mfm-cache"
    if inside.is_dir() or os.access(root, os.W_OK):  # a fresh cache is read without writing
        return inside
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return base / "mfm" / f"{root.name}-{digest}"


def _member_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    with archive.open(f"{name}.npy") as handle:
        version = np.lib.format.read_magic(handle)
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(handle)
    return shape, dtype


def _check_header(path: Path, resolution: int) -> int:
    """Row count of ``path``, after checking keys, shapes and dtypes from the headers alone
    (nothing is decompressed, so a bad file is reported before any conversion starts)."""
    try:
        with zipfile.ZipFile(path) as archive:
            keys = {Path(n).stem for n in archive.namelist()}
            if not {"data", "labels"} <= keys:
                raise ValueError(
                    f"{path} holds arrays {sorted(keys)}; expected 'data' and 'labels' ({EXPECTED})"
                )
            data_shape, data_dtype = _member_header(archive, "data")
            labels_shape, labels_dtype = _member_header(archive, "labels")
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(
            f"{path} is not a readable .npz file ({error}); expected {EXPECTED}"
        ) from error
    row = 3 * resolution * resolution
    if len(data_shape) != 2 or data_dtype != np.uint8:
        raise ValueError(
            f"{path}: 'data' is {data_dtype} of shape {data_shape}; expected uint8 rows of "
            f"3 * {resolution} * {resolution} = {row} pixels"
        )
    if data_shape[1] != row:
        side = int(round((data_shape[1] / 3) ** 0.5))
        hint = f" ({side}x{side} images)" if 3 * side * side == data_shape[1] else ""
        raise ValueError(
            f"{path}: rows of 'data' hold {data_shape[1]} values{hint}, but resolution = "
            f"{resolution} expects {row}; set resolution to match the files"
        )
    if labels_shape != data_shape[:1] or labels_dtype.kind not in "iu":
        raise ValueError(
            f"{path}: 'labels' is {labels_dtype} of shape {labels_shape}; expected "
            f"{data_shape[0]} integers, one per row of 'data'"
        )
    return data_shape[0]


def _convert(
    rows: dict[Path, int], shape: tuple[int, int, int], images_path: Path, labels_path: Path
) -> None:
    """Write all batches into one (N, *shape) uint8 memmap, one batch file in memory at once."""
    images = np.lib.format.open_memmap(
        images_path, mode="w+", dtype=np.uint8, shape=(sum(rows.values()), *shape)
    )
    labels = np.empty(len(images), dtype=np.int64)
    start = 0
    for path, count in rows.items():
        try:
            with np.load(path, allow_pickle=False) as batch:
                batch_labels = batch["labels"].astype(np.int64)
                images[start : start + count] = batch["data"].reshape(count, *shape)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise ValueError(f"{path} could not be read ({error}); expected {EXPECTED}") from error
        if count and (batch_labels.min() < 1 or batch_labels.max() > NUM_CLASSES):
            raise ValueError(
                f"{path}: labels range over {batch_labels.min()}..{batch_labels.max()}; "
                f"expected 1..{NUM_CLASSES} (the official files count from 1)"
            )
        labels[start : start + count] = batch_labels - 1
        start += count
    images.flush()
    del images
    np.save(labels_path, labels)
