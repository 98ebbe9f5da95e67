"""CIFAR-10 from the "python version" pickle batches, held in memory (150 MB of pixels)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mfm_core.datasets.images.base import ImageDataset, existing_dir

EXPECTED = (
    "the CIFAR-10 python batches data_batch_1 .. data_batch_5 and test_batch "
    "(directly or in cifar-10-batches-py/)"
)
FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
NUM_CLASSES = 10
SHAPE = (3, 32, 32)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and refuses anything that could run code."""

    NUMPY = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str) -> Any:
        # _codecs.encode: how protocol-2 pickles written by Python 3 store bytes
        if (module.split(".")[0] == "numpy" and name in self.NUMPY) or (
            module == "_codecs" and name == "encode"
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # a corrupt pickle raises almost anything
        raise ValueError(
            f"{path} is not a readable CIFAR-10 pickle ({type(error).__name__}: {error}); "
            f"expected {EXPECTED}"
        ) from error
    if not isinstance(batch, dict) or not {b"data", b"labels"} <= set(batch):
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path} holds {keys}; expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    row = int(np.prod(SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{path}: b'data' is not a 2-D uint8 array; expected (N, {row}) pixels")
    if data.shape[1] != row:
        raise ValueError(
            f"{path}: rows of b'data' hold {data.shape[1]} values; expected {row} "
            "(32x32 RGB in CHW order)"
        )
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: b'labels' must hold {len(data)} integers, one per row")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{path}: labels range over {labels.min()}..{labels.max()}; expected 0..9")
    return data.reshape(-1, *SHAPE), labels.astype(np.int64)


class Cifar10Dataset(ImageDataset):
    """CIFAR-10: ``split = "train"`` (data_batch_1..5, 50000 images) or ``"test"`` (test_batch,
    10000), read from ``root`` or ``root/cifar-10-batches-py``. Each batch is a pickle with
    ``b"data"``, uint8 rows of 3072 pixels in CHW order, and ``b"labels"`` 0..9. Items are
    ``(float32 (3, 32, 32) in [-1, 1], label)``. Only numpy arrays and plain containers are
    unpickled: a file that asks for anything else is refused.

    Args:
        root: the directory holding the CIFAR-10 python batches; unset, data.root.
        split: which part to read: "train" (50000 images) or "test" (10000).
        hflip: whether images are flipped left to right at random.
    """

    def __init__(
        self, *, root: str, split: Literal["train", "test"] = "train", hflip: bool = True
    ) -> None:
        directory = existing_dir(root, EXPECTED)
        if not (directory / FILES[split][0]).is_file():
            nested = directory / "cifar-10-batches-py"
            directory = nested if nested.is_dir() else directory
        missing = [name for name in FILES[split] if not (directory / name).is_file()]
        if missing:
            raise ValueError(f"{directory} has no {', '.join(missing)}; expected {EXPECTED}")
        batches = [_read_batch(directory / name) for name in FILES[split]]
        self.images = np.concatenate([images for images, _ in batches])
        self.labels = np.concatenate([labels for _, labels in batches])
        self.shape = SHAPE
        self.num_classes = NUM_CLASSES
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.images)

    def pixels(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.images[indices], self.labels[indices]
