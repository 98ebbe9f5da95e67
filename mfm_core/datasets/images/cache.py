"""A conversion done once: source files -> ``.npy`` arrays that every process memory-maps.

Several processes (the ranks of a torchrun job) may ask for the same cache at once: the
first takes an exclusive ``fcntl`` lock and converts, the others wait on the lock and then
find the cache fresh. Arrays are written to temporary files and renamed into place, and the
manifest, written last, is what marks the cache as complete; it records the size and
modification time of every source, so a changed source makes the cache stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

FORMAT_VERSION = 1

logger = logging.getLogger("mfm.data")

Convert = Callable[[Path, Path], None]
"""``convert(images_path, labels_path)`` writes the two ``.npy`` files."""


def describe_sources(sources: list[Path]) -> list[dict[str, object]]:
    rows = []
    for source in sources:
        stat = source.stat()
        rows.append({"name": source.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return rows


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cached_arrays(
    directory: Path, key: str, sources: list[Path], convert: Convert
) -> tuple[Path, Path]:
    """The paths ``directory/<key>-images.npy`` and ``<key>-labels.npy``, converted from
    ``sources`` by ``convert`` unless a fresh cache is already there."""
    images = directory / f"{key}-images.npy"
    labels = directory / f"{key}-labels.npy"
    manifest = directory / f"{key}.json"
    expected = {"version": FORMAT_VERSION, "sources": describe_sources(sources)}

    def fresh() -> bool:
        return _read_json(manifest) == expected and images.is_file() and labels.is_file()

    if fresh():
        return images, labels
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(directory / f"{key}.lock"):
            if not fresh():
                _convert(images, labels, manifest, expected, convert)
    except OSError as error:
        raise ValueError(
            f"cannot write the data cache in {str(directory)!r} ({error}); "
            "set cache_dir to a writable directory"
        ) from error
    return images, labels


def _convert(images: Path, labels: Path, manifest: Path, expected: dict, convert: Convert) -> None:
    manifest.unlink(missing_ok=True)
    suffix = f".tmp-{os.getpid()}.npy"
    temporary = [images.with_name(images.stem + suffix), labels.with_name(labels.stem + suffix)]
    logger.warning("converting %d file(s) into %s (done once)", len(expected["sources"]), images)
    try:
        convert(*temporary)
        for path in temporary:  # the data must be on disk before the manifest vouches for it
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary[0], images)
        os.replace(temporary[1], labels)
        temporary_manifest = manifest.with_name(manifest.name + f".tmp-{os.getpid()}")
        temporary_manifest.write_text(json.dumps(expected, indent=1))
        os.replace(temporary_manifest, manifest)
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)
