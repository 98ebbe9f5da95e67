"""Shared fixtures: a tiny config that trains in a second or two on a CPU, the one plugin
authors get from ``mfm_core.testing``."""

from __future__ import annotations

import importlib.util
import shutil
import sys
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


@pytest.fixture(scope="module")
def gpu_check():
    """benchmarks/gpu_check.py imported as a module (it is a script, not a package)."""
    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
