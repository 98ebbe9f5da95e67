"""A diverging run stops with an error naming the first bad step; no checkpoint with
non-finite weights is ever written and the last good one survives."""

from __future__ import annotations

import math

import torch

from mfm_core.runner.rundir.checkpoint import list_checkpoints, load_checkpoint
from tests.faults.helpers import one_error_line


def _all_finite(path) -> bool:
    state = load_checkpoint(path)
    return all(torch.isfinite(t).all() for t in state["model"].values())


def test_diverging_run_fails_and_keeps_its_last_good_checkpoint(fast_config, tmp_path, cli):
    runs = tmp_path / "runs"
    status, err = cli(
        "run", fast_config, "train.lr=1e6", "train.steps=40", "train.checkpoint_every=1",
        "train.log_every=5", "--runs", runs, "--quiet",
    )  # fmt: skip
    assert status == 2
    line = one_error_line(err)
    assert "training diverged" in line and "lower train.lr" in line
    run_dir = runs / "00000-fast"
    saved = list_checkpoints(run_dir / "checkpoints")
    assert saved, "the good checkpoints were rotated away"
    assert all(_all_finite(path) for _, path in saved)
    assert not (run_dir / "metrics.json").exists()


def test_divergence_between_log_lines_is_not_done(fast_config, tmp_path, cli):
    runs = tmp_path / "runs"
    status, err = cli(
        "run", fast_config, "train.lr=1e6", "train.steps=30", "train.checkpoint_every=1000",
        "train.log_every=1000", "--runs", runs, "--quiet",
    )  # fmt: skip
    assert status == 2
    assert "training diverged" in one_error_line(err)
    assert not (runs / "00000-fast" / "metrics.json").exists()


def test_the_error_names_the_first_non_finite_step(fast_config, tmp_path):
    from mfm_core.errors import MfmError
    from mfm_core.runner.run import start_run

    try:
        start_run(
            fast_config,
            ["train.lr=1e6", "train.steps=30", "train.checkpoint_every=1000", "train.log_every=1"],
            tmp_path / "a",
            progress=False,
        )
    except MfmError as exc:
        logged = [line for line in (tmp_path / "a" / "00000-fast" / "log.jsonl").open()]
        bad = int(str(exc).split("step ")[1].split()[0])
        # every logged loss is finite and the first bad step is the one after them
        assert bad == len(logged) + 1 or "weights after step" in str(exc)
        assert all(math.isfinite(float(line.split('"loss": ')[1].split(",")[0])) for line in logged)
    else:
        raise AssertionError("lr=1e6 did not diverge")
