"""Run directories: ``runs/NNNNN-<config name>/``, numbered so runs never overwrite each other."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomli_w

from mfm_core.errors import CheckpointError, ConfigError
from mfm_core.runner.rundir.checkpoint import atomic_write
from mfm_core.runner.rundir.lock import LOCK_FILE

logger = logging.getLogger(__name__)

_NUMBERED = re.compile(r"^(\d+)-")
# The temporary files of ``atomic_write`` (``.NAME.XXXXXXXX.tmp``) for the files a run writes.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")
_WRITTEN = re.compile(
    r"^(config\.toml|log\.jsonl|metrics\.json|metrics\.md|samples\.npz|[a-z]+\.png"
    r"|step-\d+\.(pt|png))$"
)

CONFIG_FILE = "config.toml"
LOG_FILE = "log.jsonl"
METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.npz"
CHECKPOINTS = "checkpoints"


def create_run_dir(root: Path, name: str) -> Path:
    """Make the next numbered directory under ``root`` (made if missing; its parent must
    exist): one more than the highest number of any ``N-...`` name there. ``mkdir`` is
    exclusive, so concurrent starts never share one."""
    try:
        root.mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--runs {str(root)!r}: cannot make the directory ({exc.strerror})"
        ) from None
    if not root.is_dir():
        raise ConfigError(f"--runs {str(root)!r} is not a directory; give a directory")
    while True:
        numbers = [int(m.group(1)) for p in root.iterdir() if (m := _NUMBERED.match(p.name))]
        path = root / f"{max(numbers, default=-1) + 1:05d}-{name}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def existing_run_dir(path: Path) -> Path:
    """A run directory to resume or sample from; it must hold a config."""
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{str(path)!r} is not a run directory (no {CONFIG_FILE} in it)")
    return path


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete what a killed ``atomic_write`` left in ``run_dir`` and its checkpoints and grids
    (only temporaries of files a run writes); returns the files removed. Call it holding
    the run's lock, so no other process is writing them."""
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINTS, run_dir / "grids"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = _TEMPORARY.match(path.name)
            if match and _WRITTEN.match(match["name"]) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def remove_written(folder: Path, *, remove_folder: bool) -> None:
    """Delete from ``folder`` the files a run or an evaluation writes, their temporaries and
    its lock file, then (``remove_folder``) ``folder`` itself if nothing else is left in it:
    what a stopped evaluation leaves (any file it did not write stays, and so does the
    folder)."""
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        name = match["name"] if match else path.name
        if path.is_file() and (_WRITTEN.match(name) or path.name == LOCK_FILE):
            path.unlink(missing_ok=True)
    if remove_folder:
        with contextlib.suppress(OSError):  # not empty: something else is in it
            folder.rmdir()


def write_config(run_dir: Path, data: dict[str, Any]) -> None:
    text = tomli_w.dumps(data).encode()
    atomic_write(run_dir / CONFIG_FILE, lambda handle: handle.write(text))


def _finite(value: Any) -> Any:
    """``data`` with NaN and infinities as ``null``: strict JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented, strict JSON (non-finite numbers become ``null``)."""
    text = (json.dumps(_finite(data), indent=2, allow_nan=False) + "\n").encode()
    atomic_write(path, lambda handle: handle.write(text))


def read_log(run_dir: Path, problems: list[int] | None = None) -> list[dict[str, Any]]:
    """The per-step training log: every line that is a JSON object with an integer ``step``.
    Other lines are left out, and their numbers added to ``problems``, except a torn last line
    (a crash mid-write), which is expected."""
    path = run_dir / LOG_FILE
    if not path.exists():
        return []
    lines = path.read_bytes().decode(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
            if number == len(lines):
                continue
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            if problems is not None:
                problems.append(number)
            continue
        records.append(record)
    return records


def truncate_log(run_dir: Path, step: int) -> None:
    """Keep the log entries up to ``step``: a run resumed from there writes the rest again.
    Lines that are not log records (torn or edited) are left out with a warning; every
    record after them is kept."""
    problems: list[int] = []
    kept = [r for r in read_log(run_dir, problems) if r["step"] <= step]
    if problems:
        shown = ", ".join(str(n) for n in problems[:10]) + (", ..." if len(problems) > 10 else "")
        logger.warning(
            f"warning: {run_dir / LOG_FILE}: line(s) {shown} are not log records (torn or "
            "edited by hand); they are left out, and the records around them kept"
        )
    text = "".join(json.dumps(r) + "\n" for r in kept).encode()
    atomic_write(run_dir / LOG_FILE, lambda handle: handle.write(text))


RUN_LOG = "run.log"
LOGGER = "mfm_core.runner"
"""The runner's modules log under this name; ``run_log`` copies their records to the run."""


@contextlib.contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    """While open, the runner's log records (INFO and up) are also appended to ``run.log`` in
    ``run_dir``, timestamped. Where they are shown besides is the application's choice (the
    CLI writes them to stderr)."""
    logger = logging.getLogger(LOGGER)
    handler = logging.FileHandler(run_dir / RUN_LOG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler.setLevel(logging.INFO)
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
