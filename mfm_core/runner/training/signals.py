"""Signals while training: Ctrl-C and SIGTERM end the current step instead of interrupting it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """While training, SIGINT and SIGTERM only record the signal, so the current step ends
    cleanly and is checkpointed before the run stops (a signal mid-update would save a
    half-updated model). Outside the main thread signals cannot be caught; nothing changes."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda number, _frame: received.append(number))
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
