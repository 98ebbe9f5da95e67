"""Tiny data sets written in exactly the real on-disk formats, for tests and smoke runs.

Import as ``from tests.datasets.formats import write_cifar10`` (``python -m pytest`` from the
repository root puts it on the path). Pixels are random but seeded; every writer returns
what it wrote, so a test can compare the loader's output with the source.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_imagenet_npz(
    root: Path, resolution: int, n_per_batch: int, batches: int, *, val: int = 0, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``train_data_batch_1.npz .. train_data_batch_<batches>.npz`` (+ ``val_data.npz`` with
    ``val`` rows if ``val > 0``) under ``root``, as in the official downsampled ImageNet:
    ``data`` uint8 (n, 3 * resolution^2) in CHW order, ``labels`` 1..1000, train batches also
    ``mean``. Returns ``{"train": (data, labels), "val": ...}`` as written (labels 1-based)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    row = 3 * resolution * resolution

    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 256, (n, row), dtype=np.uint8), rng.integers(1, 1001, n)

    written: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "val": []}
    for b in range(1, batches + 1):
        data, labels = rows(n_per_batch)
        mean = data.mean(axis=0)
        np.savez_compressed(root / f"train_data_batch_{b}.npz", data=data, labels=labels, mean=mean)
        written["train"].append((data, labels))
    if val:
        data, labels = rows(val)
        np.savez_compressed(root / "val_data.npz", data=data, labels=labels)
        written["val"].append((data, labels))
    return {
        split: (np.concatenate([d for d, _ in parts]), np.concatenate([lab for _, lab in parts]))
        for split, parts in written.items()
        if parts
    }


def write_cifar10(root: Path, n: int, *, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``data_batch_1 .. data_batch_5`` and ``test_batch`` with ``n`` images each in ``root``,
    pickled (protocol 2) dicts with byte keys ``b"data"`` (uint8 (n, 3072), CHW), ``b"labels"``
    (a list of 0..9), ``b"batch_label"`` and ``b"filenames"``, like the CIFAR-10 python version.
    Returns ``{"train": (data, labels), "test": ...}`` as written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels.tolist(),
            b"data": data,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        with open(root / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
        written["test" if name == "test_batch" else "train"].append((data, labels))
    return {
        split: (np.concatenate([d for d, _ in parts]), np.concatenate([lab for _, lab in parts]))
        for split, parts in written.items()
    }


def write_image_folder(
    root: Path,
    classes: list[str] | None,
    n: int,
    size: int | tuple[int, int],
    *,
    suffix: str = ".png",
    seed: int = 0,
) -> dict[Path, np.ndarray]:
    """``n`` random RGB images per class in ``root/<class>/img<i><suffix>`` (or directly in
    ``root`` when ``classes`` is None), ``size`` = side or (width, height). Returns each file's
    uint8 (height, width, 3) pixels (before any JPEG loss)."""
    rng = np.random.default_rng(seed)
    width, height = (size, size) if isinstance(size, int) else size
    written = {}
    for folder in [root / c for c in classes] if classes is not None else [root]:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img{i}{suffix}")
            written[folder / f"img{i}{suffix}"] = pixels
    return written
