"""What the fault tests share: a run that trains in well under a second, and checks of the
CLI's answer. Import as ``from tests.faults.helpers import ...``."""

from __future__ import annotations

import os

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


def one_error_line(lines: list[str]) -> str:
    """The single ``error:`` line of a failed command, its last line, with no traceback
    (the run's progress lines may come before it)."""
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert not any("Traceback" in line for line in lines), lines
    return errors[0]


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MFM_TRACEBACK", "RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env
