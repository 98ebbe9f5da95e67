"""Checkpoints written atomically, so a crash at any moment leaves the last good one intact."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from mfm_core.errors import CheckpointError

_NAME = re.compile(r"^step-(\d+)\.pt$")


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, flush it to disk, then
    rename it over ``path``: readers see the old file or the new one, never half of one.
    The file gets the permissions of any new file (``0o666`` less the umask), not the
    owner-only ones of a temporary file. The folder is made if missing, its parent must
    exist (so a mistyped path creates no chain of folders)."""
    path.parent.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    handle = None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as raw:
            handle = _Recording(raw)
            write(handle)
            handle.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if handle is not None and handle.error is not None and not isinstance(exc, OSError):
            # torch.save reports a failed write (a full disk) as a RuntimeError: say what it was
            error = handle.error
            raise OSError(error.errno, error.strerror, str(path)) from exc
        raise


class _Recording:
    """A binary file that remembers the OSError of a failed write or flush (writers such as
    torch.save turn it into another exception)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.raw.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self.raw.flush()
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def probe_writable(directory: Path) -> None:
    """Make ``directory`` if missing and write and remove a file in it: a folder where
    checkpoints cannot be written is an error before training, not at the first checkpoint."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"{exc.strerror}: checkpoints cannot be written there; make it writable, then run "
            "again",
            str(directory),
        ) from None


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Checkpoints in ``directory``, newest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def save_checkpoint(
    directory: Path, step: int, state: dict[str, Any], keep: int, owned: list[Path]
) -> Path:
    """Write ``state`` for ``step``, read it back, then delete the oldest of ``owned`` (the
    checkpoints this run wrote or loaded, oldest first; the new one is appended) beyond the
    ``keep`` newest. Files it did not write or load, e.g. unreadable ones named like later
    steps, are never counted nor deleted."""
    path = checkpoint_path(directory, step)
    atomic_write(path, lambda handle: torch.save(state, handle))
    load_checkpoint(path, mmap=True)  # a checkpoint that does not load replaces nothing
    if path in owned:
        owned.remove(path)
    owned.append(path)
    while len(owned) > keep:
        owned.pop(0).unlink(missing_ok=True)
    return path


REQUIRED = {"step": int, "elapsed": float, "world_size": int, "model": dict, "ranks": list}
"""What every checkpoint mfm writes holds (``Trainer.state``), with the type of each."""


def load_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load one checkpoint (tensors and plain data only: no code is unpickled) and check
    that it is one mfm wrote (:data:`REQUIRED`). With ``mmap`` the tensors' data are mapped,
    not read: a cheap check that the file loads."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
    except pickle.UnpicklingError:
        # torch's message advises loading the file without the safe loader: never for a
        # file that holds code.
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds objects other than tensors and plain data, which "
            "mfm never writes; it was not loaded"
        ) from None
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable or corrupted ({type(exc).__name__}: {reason})"
        ) from None
    missing = [
        f"{key} ({kind.__name__})"
        for key, kind in REQUIRED.items()
        if not isinstance(state, dict)
        or not isinstance(state.get(key), kind)
        or isinstance(state.get(key), bool)
    ]
    if missing:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not one this mfm wrote (or can resume): it lacks "
            f"{', '.join(missing)}"
        )
    return state


def newest_loadable(directory: Path) -> tuple[Path, list[str]]:
    """The newest checkpoint that loads (mapped, not read); corrupted newer ones are skipped
    and reported."""
    problems: list[str] = []
    for _, path in list_checkpoints(directory):
        try:
            load_checkpoint(path, mmap=True)
            return path, problems
        except CheckpointError as exc:
            problems.append(str(exc))
    detail = "; ".join(problems) if problems else "there are none"
    raise CheckpointError(f"no usable checkpoint in {str(directory)!r}: {detail}")


def load_latest(directory: Path) -> tuple[dict[str, Any], Path, list[str]]:
    """The newest checkpoint that loads, read; corrupted newer ones are skipped and reported."""
    path, problems = newest_loadable(directory)
    return load_checkpoint(path), path, problems


def verified_up_to(directory: Path, step: int) -> list[Path]:
    """The checkpoints in ``directory`` up to ``step`` that load, oldest first: those a
    resumed run may rotate away (a later or unreadable one is not the run's to delete)."""
    found = []
    for saved, path in reversed(list_checkpoints(directory)):
        if saved > step:
            continue
        try:
            load_checkpoint(path, mmap=True)
        except CheckpointError:
            continue
        found.append(path)
    return found
