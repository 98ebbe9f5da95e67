"""Shared fixtures: a tiny config that trains in a second or two on a CPU."""

from __future__ import annotations

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
