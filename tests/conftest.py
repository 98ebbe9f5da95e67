"""Shared fixtures: a tiny config that trains in a second or two on a CPU, the one plugin
authors get from ``mfm_core.testing``."""

from __future__ import annotations

from pathlib import Path

import pytest

from mfm_core.testing import write_tiny_config


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    return write_tiny_config(tmp_path)
