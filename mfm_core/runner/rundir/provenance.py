"""What produced a run: mfm's version, torch's and Python's, the device, the host, the command
line, and when each session (the run, then each resume) started and finished.

``provenance.json`` holds one record per session; it is written when a session starts (so a
run that crashes still says what produced it) and again when it finishes, and metrics.json
carries the same list under ``provenance``.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

import torch

from mfm_core.runner.rundir.layout import write_json

PROVENANCE_FILE = "provenance.json"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:  # mfm run from a source tree
        return None


def describe_device(device: torch.device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA A100-SXM4-80GB)``: the device and, for a GPU, its model."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def session_record(device: torch.device, processes: int = 1) -> dict[str, Any]:
    """The record of a session starting now on ``device`` (``finished`` is ``None`` until
    :func:`finish_session`)."""
    return {
        "mfm": _version("mfm"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": describe_device(device),
        "processes": processes,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "command": shlex.join(sys.argv),
        "started": _now(),
        "finished": None,
    }


def read_provenance(run_dir: Path) -> list[dict[str, Any]]:
    """The session records of ``run_dir``, oldest first (``[]`` for a run without any)."""
    path = run_dir / PROVENANCE_FILE
    return json.loads(path.read_text())["sessions"] if path.is_file() else []


def start_session(run_dir: Path, record: dict[str, Any]) -> None:
    """Add the record of a session that starts to ``provenance.json``."""
    write_json(run_dir / PROVENANCE_FILE, {"sessions": [*read_provenance(run_dir), record]})


def finish_session(run_dir: Path) -> list[dict[str, Any]]:
    """Set the newest session's ``finished`` time; returns every session's record."""
    sessions = read_provenance(run_dir)
    sessions[-1]["finished"] = _now()
    write_json(run_dir / PROVENANCE_FILE, {"sessions": sessions})
    return sessions
