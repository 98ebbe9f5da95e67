"""Paths made from user text that stay where they belong: directory names from swept values and
plan files, and the paths of command-line options, resolved before anything is written."""

from __future__ import annotations

import re
from pathlib import Path

from mfm_core.errors import ConfigError

MAX_LENGTH = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
_SAFE = re.compile(r"^[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*$")


def slug(text: str) -> str:
    """A file name made of ``[A-Za-z0-9._=+-]`` that starts with none of ``._``: never ``.``,
    ``..``, hidden, nor holding a separator (``run`` when nothing is left)."""
    name = _UNSAFE.sub("_", text).lstrip("._").rstrip("_")[:MAX_LENGTH].rstrip("._")
    return name or "run"


def is_slug(name: str) -> bool:
    return len(name) <= MAX_LENGTH + 3 and bool(_SAFE.match(name))


def child(parent: Path, name: str) -> Path:
    """``parent / name`` when ``name`` is a slug and the path, symbolic links resolved, is a
    direct child of ``parent``; anything else is a ConfigError."""
    path = parent / name
    if not is_slug(name) or path.resolve().parent != parent.resolve():
        raise ConfigError(
            f"{name!r} is not a directory name inside {str(parent)!r}; expected a plain name "
            "of letters, digits and ._=+- (no path separators, not '.' or '..', no links out)"
        )
    return path


def in_existing_folder(path: Path, option: str) -> Path:
    """``path`` resolved (``..`` and links), when its folder exists: an option never creates
    folders along a mistyped path (``--out /nonexistent/x``). A ConfigError otherwise."""
    resolved = path.expanduser().resolve()
    if not resolved.parent.is_dir():
        raise ConfigError(
            f"{option} {str(path)!r}: the folder {str(resolved.parent)!r} does not exist; make "
            "it first (mfm creates only the last part of the path)"
        )
    return resolved
