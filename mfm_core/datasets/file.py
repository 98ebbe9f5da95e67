"""Points read from a file: .npy, .npz or .csv."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from mfm_core.errors import ConfigError

SUFFIXES = (".npy", ".npz", ".csv")


def _load_numpy(path: str, key: str | None) -> np.ndarray:
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        if key is not None:
            raise ConfigError(f"data file {path!r} holds a single array; key applies to .npz files")
        return loaded
    with loaded:
        keys = list(loaded.files)
        if key is None and len(keys) == 1:
            key = keys[0]
        if key is None:
            raise ConfigError(f"data file {path!r} holds arrays {keys}; set key to one of them")
        if key not in keys:
            raise ConfigError(f"data file {path!r} has no array {key!r}; it holds {keys}")
        return loaded[key]


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _load_csv(path: str) -> np.ndarray:
    """Comma-separated numbers; a first row is a header only when none of its fields is a
    number (said in a warning), so a typo in the first row of data is an error, not lost."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"data file {path!r} is not UTF-8 text (byte {exc.start})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and not any(_is_number(field) for field in lines[0].split(",")):
        warnings.warn(f"data file {path!r}: first row {lines[0]!r} taken as a header", stacklevel=2)
        lines = lines[1:]
    if not lines:
        raise ConfigError(f"data file {path!r} holds no rows; expected comma-separated numbers")
    for row, line in enumerate(lines, start=1):
        bad = [field for field in line.split(",") if not _is_number(field)]
        if bad:
            raise ConfigError(
                f"data file {path!r}: row {row} ({line!r}) holds {bad[0]!r}, not a number; "
                "expected comma-separated numbers (a header row holds no numbers at all)"
            )
    return np.loadtxt(lines, delimiter=",", ndmin=2, dtype=np.float64)


def load_points(path: str, key: str | None = None) -> np.ndarray:
    """Read an (N, d) array of finite numbers with N, d >= 1 from ``path``.

    ``.npy``: the array itself; ``.npz``: the array under ``key``, or the only array;
    ``.csv``: comma-separated numbers, an optional non-numeric header line skipped.
    Raises ``ConfigError`` naming the file and what was expected.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"data file {path!r} has an unknown extension {suffix!r}; expected one of {SUFFIXES}"
        )
    if not Path(path).is_file():
        raise ConfigError(f"data file {path!r} is not an existing file")
    if key is not None and suffix == ".csv":
        raise ConfigError(f"data file {path!r} is a .csv file; key applies to .npz files")
    try:
        data = _load_csv(path) if suffix == ".csv" else _load_numpy(path, key)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ConfigError(f"data file {path!r} could not be read: {error}") from error
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 1:
        raise ConfigError(
            f"data file {path!r} holds an array of shape {data.shape}; expected (N, d) with "
            "N >= 1 and d >= 1"
        )
    if data.dtype.kind not in "iuf":
        raise ConfigError(f"data file {path!r} holds {data.dtype} values; expected real numbers")
    bad = ~np.isfinite(data) | (np.abs(data) > np.finfo(np.float32).max)
    if bad.any():
        row = int(np.argwhere(bad.any(axis=1))[0, 0])
        raise ConfigError(
            f"data file {path!r}: row {row} (counting data rows from 0) holds {data[row].tolist()}"
            "; expected finite numbers within float32 range (|x| <= 3.4e38)"
        )
    return data


class Points:
    """A finite data set (``PointSet``): the rows of ``points`` (N, ...), drawn uniformly with
    replacement. ``sample(n, g)`` -> (n, ...) with row indices drawn from ``g``."""

    def __init__(self, points: torch.Tensor) -> None:
        self.points = points
        self.shape = tuple(points.shape[1:])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        rows = torch.randint(len(self.points), (n,), generator=generator)
        return self.points[rows]


class FileDataset(Points):
    """Rows of an (N, d) array from a file, drawn uniformly with replacement.

    The file is read once, at construction (see ``load_points``). ``sample(n, g)`` -> (n, d),
    float32, with row indices drawn from ``g``.

    Args:
        path: the .npy, .npz or .csv file holding an (N, d) array of points.
        key: the name of the array in an .npz file; unset, its only array.
    """

    def __init__(self, *, path: str, key: str | None = None) -> None:
        super().__init__(torch.from_numpy(load_points(path, key).astype(np.float32)))
        self.path = path
        self.key = key
