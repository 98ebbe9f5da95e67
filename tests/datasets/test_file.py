from pathlib import Path

import numpy as np
import pytest
import torch

from mfm_core.datasets import FileDataset
from mfm_core.errors import ConfigError

POINTS = np.arange(12, dtype=np.float64).reshape(6, 2)


def _draw(dataset: FileDataset, n: int = 50) -> torch.Tensor:
    return dataset.sample(n, torch.Generator().manual_seed(0))


def _assert_rows_of_points(x: torch.Tensor) -> None:
    assert x.dtype == torch.float32 and x.shape == (50, 2)
    assert set(map(tuple, x.tolist())) <= set(map(tuple, POINTS.tolist()))


def test_npy(tmp_path: Path) -> None:
    path = tmp_path / "points.npy"
    np.save(path, POINTS)
    dataset = FileDataset(path=str(path))
    assert dataset.shape == (2,)
    x = _draw(dataset)
    _assert_rows_of_points(x)
    torch.testing.assert_close(x, _draw(dataset), rtol=0, atol=0)
    assert len(set(map(tuple, x.tolist()))) > 1


def test_npz_with_a_single_array_needs_no_key(tmp_path: Path) -> None:
    path = tmp_path / "points.npz"
    np.savez(path, data=POINTS)
    _assert_rows_of_points(_draw(FileDataset(path=str(path))))


def test_npz_with_a_key(tmp_path: Path) -> None:
    path = tmp_path / "points.npz"
    np.savez(path, labels=np.zeros(6), points=POINTS)
    _assert_rows_of_points(_draw(FileDataset(path=str(path), key="points")))


def test_csv_with_header(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    path.write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in POINTS) + "\n")
    _assert_rows_of_points(_draw(FileDataset(path=str(path))))


def test_csv_without_header(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    np.savetxt(path, POINTS, delimiter=",")
    _assert_rows_of_points(_draw(FileDataset(path=str(path))))


def _write(path: Path, content) -> None:
    if path.suffix == ".npz":
        np.savez(path, **content)
    elif path.suffix == ".npy":
        np.save(path, content)
    else:
        path.write_text(content)


@pytest.mark.parametrize(
    ("name", "content", "key", "expected"),
    [
        ("missing.npy", None, None, "not an existing file"),
        ("points.txt", "1,2\n", None, "unknown extension"),
        ("cube.npy", np.zeros((3, 4, 5)), None, r"shape \(3, 4, 5\); expected \(N, d\)"),
        ("empty.npy", np.zeros((0, 2)), None, "N >= 1"),
        ("words.npy", np.array([["a", "b"]]), None, "expected real numbers"),
        ("nan.npy", np.array([[1.0, np.nan]]), None, "finite"),
        ("two.npz", {"a": POINTS, "b": POINTS}, None, r"\['a', 'b'\]"),
        ("two.npz", {"a": POINTS, "b": POINTS}, "c", "no array 'c'"),
        ("single.npy", POINTS, "a", "key"),
        ("ragged.csv", "1,2\n3\n", None, "could not be read"),
        ("header.csv", "x,y\n", None, "no rows"),
        ("points.csv", "1,2\n", "a", "key"),
    ],
)
def test_bad_files_raise_config_errors_naming_the_file(
    tmp_path: Path, name: str, content, key: str | None, expected: str
) -> None:
    path = tmp_path / name
    if content is not None:
        _write(path, content)
    with pytest.raises(ConfigError, match=expected) as info:
        FileDataset(path=str(path), key=key)
    assert name in str(info.value)
