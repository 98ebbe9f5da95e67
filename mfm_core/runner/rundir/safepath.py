"""Directory names made from user text (swept values, plan files) that stay where they belong."""

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
