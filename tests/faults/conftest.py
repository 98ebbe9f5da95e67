"""Fixtures of the fault tests: a run that trains in well under a second, and the CLI's
answer to a command as (exit status, stderr lines)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mfm_core.cli import main

FAST = """
[data]
source = { name = "gaussian", shape = [2] }
target = "checkerboard"

[coupler]
name = "independent"

[model]
name = "mlp"
hidden = [16, 16]

[solver]
name = "euler"
steps = 2

[train]
steps = 6
batch_size = 16
lr = 1e-3
seed = 3
device = "cpu"
checkpoint_every = 2
keep_checkpoints = 2

[eval]
num_samples = 50
loss_batches = 1
trajectories = 0
metrics = []
save_samples = false
solvers = [{ name = "euler", steps = 1 }]
"""


@pytest.fixture
def fast_config(tmp_path: Path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(FAST)
    return path


@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli(*argv)`` -> (exit status, stderr lines) of ``mfm argv`` in this process."""
    monkeypatch.delenv("MFM_TRACEBACK", raising=False)
    monkeypatch.delenv("RANK", raising=False)

    def run(*argv: str) -> tuple[int, list[str]]:
        capsys.readouterr()
        status = main([str(a) for a in argv])
        return status, capsys.readouterr().err.strip().splitlines()

    return run


def one_error_line(lines: list[str]) -> str:
    """The single ``error:`` line of a user mistake (warnings aside), no traceback."""
    errors = [line for line in lines if not line.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith("error: "), lines
    assert not any("Traceback" in line for line in lines), lines
    return errors[0]


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MFM_TRACEBACK", "RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env
