"""How a run's last session ended, recorded in the run directory (``outcome.json``), so that a
run that failed says so where its results would be, not only on a terminal long closed.

``outcome`` is one of ``running`` (written when a session starts: if no process holds the
run's lock, the process was killed without a chance to record anything, e.g. by SIGKILL),
``done``, ``failed`` (with the message), ``diverged`` or ``interrupted`` (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mfm_core.errors import DivergedError, StoppedError
from mfm_core.runner.rundir.layout import RUN_LOG, write_json

OUTCOME_FILE = "outcome.json"


def outcome_of(error: BaseException | None) -> str:
    """``done`` without an error, else how the error ended the run."""
    if error is None:
        return "done"
    if isinstance(error, DivergedError):
        return "diverged"
    if isinstance(error, (StoppedError, KeyboardInterrupt)):
        return "interrupted"
    return "failed"


def write_outcome(run_dir: Path, outcome: str, step: int | None, message: str = "") -> None:
    """``outcome.json``; an outcome other than ``running`` and ``done`` also ends ``run.log``
    (the terminal shows it as the command's ``error:`` line already)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    record = {"outcome": outcome, "step": step, "message": message, "pid": os.getpid()}
    write_json(run_dir / OUTCOME_FILE, {**record, "time": now.isoformat(timespec="seconds")})
    if outcome not in ("running", "done"):
        with open(run_dir / RUN_LOG, "a") as log:
            log.write(f"{now:%Y-%m-%d %H:%M:%S} {outcome} at step {step}: {message}\n")


@contextlib.contextmanager
def recorded_outcome(run_dir: Path, step: Callable[[], int | None]) -> Iterator[None]:
    """Record ``running`` now, then how the ``with`` block ended (``step()``: the step the
    run reached). The block's error is raised again as it was, even when the record cannot
    be written (a full disk)."""
    write_outcome(run_dir, "running", step())
    try:
        yield
    except BaseException as exc:
        outcome = outcome_of(exc)
        message = str(exc) or type(exc).__name__
        with contextlib.suppress(OSError):
            write_outcome(run_dir, outcome, step(), message)
        raise
    write_outcome(run_dir, "done", step())


def read_outcome(run_dir: Path) -> dict[str, Any] | None:
    """The recorded outcome, or ``None`` when there is none or it is unreadable."""
    try:
        record = json.loads((run_dir / OUTCOME_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
