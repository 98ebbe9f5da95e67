"""The loss a run reports does not depend on how its batch is split into micro-batches: with
the same pairs and times, ``train.grad_accum`` 1, 2 and 4 log the same losses (the mean over
the whole batch) and train the same weights, up to rounding."""

from __future__ import annotations

import pytest

from mfm_core.runner.run import start_run
from mfm_core.runner.rundir.layout import read_log
from tests.faults.helpers import FAST


def test_the_reported_loss_is_the_same_for_every_grad_accum(tmp_path):
    config = tmp_path / "fast.toml"
    config.write_text(FAST)
    logs = {}
    for accum in (1, 2, 4):
        overrides = [f"train.grad_accum={accum}", "train.steps=4", "train.checkpoint_every=4",
                     "train.overlap_coupling='off'"]  # fmt: skip
        run_dir = start_run(config, overrides, tmp_path / str(accum), progress=False)
        logs[accum] = [r["loss"] for r in read_log(run_dir)]
    assert len(logs[1]) == 4
    # Step 1: the same pairs and times through the same weights, only summed differently.
    assert logs[2][0] == pytest.approx(logs[1][0], rel=1e-6)
    assert logs[4][0] == pytest.approx(logs[1][0], rel=1e-6)
    # Later steps: the same gradients, up to rounding, so the same losses.
    assert logs[2] == pytest.approx(logs[1], rel=1e-4)
    assert logs[4] == pytest.approx(logs[1], rel=1e-4)
