"""Shared fixtures: a tiny config that trains in a second or two on a CPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY = """
[data]
source = { name = "gaussian", shape = [2] }
target = "checkerboard"

[coupler]
name = "exact"

[model]
name = "mlp"
hidden = [32, 32]

[solver]
name = "euler"
steps = 4

[train]
steps = 40
batch_size = 32
lr = 1e-3
seed = 3
device = "cpu"
checkpoint_every = 10
keep_checkpoints = 2

[eval]
num_samples = 100
loss_batches = 2
trajectories = 20
metrics = ["w2"]
solvers = [
  { name = "euler", steps = 1 },
  { name = "rk4", steps = 2 },
  { name = "dopri5", atol = 1e-3, rtol = 1e-3 },
]
"""


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="session")
def _trained_tiny_run(tmp_path_factory) -> Path:
    """``TINY`` trained once per test session; tests get copies (see ``tiny_run``)."""
    from mfm_core.runner.run import start_run

    root = tmp_path_factory.mktemp("tiny-run")
    (root / "tiny.toml").write_text(TINY)
    return start_run(root / "tiny.toml", [], root / "runs", progress=False)


@pytest.fixture
def tiny_run(_trained_tiny_run: Path, tmp_path: Path) -> Path:
    """A finished run of ``TINY`` (40 steps, checkpoints at 30 and 40) that the test owns: a
    copy of one trained per session, so a test may corrupt or extend it."""
    return Path(shutil.copytree(_trained_tiny_run, tmp_path / "runs" / _trained_tiny_run.name))
