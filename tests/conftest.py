"""Shared fixtures: a tiny config that trains in a second or two on a CPU, the one plugin
authors get from ``mfm_core.testing``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mfm_core.testing import write_tiny_config


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    return write_tiny_config(tmp_path)


@pytest.fixture(scope="session")
def _trained_tiny_run(tmp_path_factory) -> Path:
    """The tiny config trained once per test session; tests get copies (see ``tiny_run``)."""
    from mfm_core.runner.run import start_run

    root = tmp_path_factory.mktemp("tiny-run")
    return start_run(write_tiny_config(root), [], root / "runs", progress=False)


@pytest.fixture
def tiny_run(_trained_tiny_run: Path, tmp_path: Path) -> Path:
    """A finished run of the tiny config (40 steps, checkpoints at 30 and 40) that the test
    owns: a copy of one trained per session, so a test may corrupt or extend it."""
    return Path(shutil.copytree(_trained_tiny_run, tmp_path / "runs" / _trained_tiny_run.name))
