"""One process at a time in a run directory: an exclusive ``flock`` on ``RUN_DIR/.lock``.

The lock is the kernel's, held through an open file descriptor: it is released when the process
ends in any way (including SIGKILL), so a stale lock never blocks a resume. The lock file is
never deleted (deleting it would let two processes lock two different files).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from mfm_core.errors import MfmError

LOCK_FILE = ".lock"


class RunLockedError(MfmError):
    """Another process is working in the run directory."""


@contextlib.contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock for the ``with`` block; raises :class:`RunLockedError` at once
    (no waiting) when another process holds it."""
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunLockedError(
                f"{str(directory)!r} is in use by another mfm process (pid {holder}); wait for "
                "it to finish, or stop it, before training or evaluating there"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
