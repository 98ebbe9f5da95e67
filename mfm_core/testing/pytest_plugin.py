"""Fixtures for plugin authors' tests, loaded by pytest through mfm's ``pytest11`` entry point.

- ``mfm_tiny_config``: the path of ``TINY_CONFIG`` written to the test's ``tmp_path``;
- ``mfm_registry(*plugins)``: an isolated registry with the built-ins and ``plugins``;
- ``mfm_train(*overrides, plugins=..., steps=3)``: a short run in ``tmp_path`` (a ``ShortRun``).

mfm is imported only when a fixture is used, so this plugin costs nothing in other projects'
test runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def mfm_tiny_config(tmp_path: Path) -> Path:
    """``mfm_core.testing.TINY_CONFIG`` written to ``tmp_path / "tiny.toml"``."""
    from mfm_core.testing import write_tiny_config

    return write_tiny_config(tmp_path)


@pytest.fixture
def mfm_registry() -> Callable[..., Any]:
    """``mfm_registry(*plugins)``: ``mfm_core.testing.isolated_registry``."""
    from mfm_core.testing import isolated_registry

    return isolated_registry


@pytest.fixture
def mfm_train(tmp_path: Path) -> Callable[..., Any]:
    """``mfm_train(*overrides, plugins=(), steps=3)``: ``mfm_core.testing.train_briefly`` in a
    fresh directory under ``tmp_path`` for each call."""
    from mfm_core.testing import train_briefly

    calls = 0

    def train(*overrides: str, **options: Any) -> Any:
        nonlocal calls
        calls += 1
        return train_briefly(*overrides, directory=tmp_path / f"mfm-train-{calls}", **options)

    return train
