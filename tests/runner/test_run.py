"""Whole runs: the run directory, metrics, resuming (after a clean stop or a SIGKILL),
corrupted checkpoints, and sampling from a finished run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mfm_core.errors import CheckpointError, ConfigError
from mfm_core.runner.evaluation.sampling import sample_run
from mfm_core.runner.run import resume_run, start_run
from mfm_core.runner.rundir.checkpoint import list_checkpoints
from mfm_core.runner.rundir.layout import read_log


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_log(run_dir)]


def test_run_directory_holds_config_log_checkpoints_metrics_and_pictures(tiny_config, tmp_path):
    run_dir = start_run(tiny_config, ["train.ema=0.9"], tmp_path / "runs", progress=False)
    assert run_dir.name == "00000-tiny"
    for name in ("config.toml", "log.jsonl", "run.log", "metrics.json"):
        assert (run_dir / name).is_file(), name
    for name in ("samples.png", "trajectories.png", "loss.png", "metrics.png"):
        assert (run_dir / name).stat().st_size > 1000, name
    assert "ema = 0.9" in (run_dir / "config.toml").read_text()
    assert "| rk4 2 | 8 |" in (run_dir / "metrics.md").read_text()
    assert [step for step, _ in losses(run_dir)] == list(range(1, 41))
    assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")] == [40, 30]

    with np.load(run_dir / "samples.npz") as saved:
        assert sorted(saved.files) == [
            "dopri5",
            "euler-1",
            "noise",
            "reference",
            "rk4-2",
            "trajectory",
            "trajectory_nfe",
        ]
        assert all(saved[name].shape == (100, 2) for name in saved.files if "traj" not in name)
        # eval.trajectories = 20 paths of the top-level solver (euler, 4 steps): 5 points each
        assert saved["trajectory"].shape == (5, 20, 2)
        assert int(saved["trajectory_nfe"]) == 4
        from mfm_core.metrics.w2 import w2_distance

        w2_of_rk4 = w2_distance(
            torch.from_numpy(saved["rk4-2"]), torch.from_numpy(saved["reference"])
        )

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["final_loss"] > 0
    rows = metrics["samples"]
    assert [(r["solver"], r.get("steps"), r["nfe"]) for r in rows[:2]] == [
        ("euler", 1, 1),
        ("rk4", 2, 8),
    ]
    assert rows[2]["solver"] == "dopri5" and rows[2]["nfe"] > 6
    assert all(r["w2"] > 0 for r in rows)
    assert rows[1]["w2"] == pytest.approx(w2_of_rk4)

    second = start_run(tiny_config, [], tmp_path / "runs", progress=False)
    assert second.name == "00001-tiny"  # never overwritten


def test_extended_run_logs_the_same_losses_as_an_uninterrupted_one(tiny_config, tmp_path):
    overrides = ["train.ema=0.9", "train.warmup_steps=5"]
    whole = start_run(tiny_config, overrides, tmp_path / "a", progress=False)
    part = start_run(tiny_config, [*overrides, "train.steps=20"], tmp_path / "b", progress=False)
    resume_run(part, ["train.steps=40"], progress=False)
    assert losses(part) == losses(whole)
    whole_metrics = json.loads((whole / "metrics.json").read_text())
    part_metrics = json.loads((part / "metrics.json").read_text())
    assert part_metrics["samples"] == whole_metrics["samples"]
    assert part_metrics["final_loss"] == whole_metrics["final_loss"]


def test_run_resumed_from_a_middle_checkpoint_repeats_its_losses(tiny_config, tmp_path):
    overrides = ["train.lr_schedule=cosine", "train.keep_checkpoints=4", "train.ema=0.5"]
    run_dir = start_run(tiny_config, overrides, tmp_path / "runs", progress=False)
    before = losses(run_dir)
    for step, path in list_checkpoints(run_dir / "checkpoints"):
        if step > 10:
            path.unlink()
    resume_run(run_dir, [], progress=False)
    assert losses(run_dir) == before


def start_in_background(config: Path, overrides: list[str], runs: Path) -> subprocess.Popen:
    """Start ``mfm run`` in a subprocess and return once it has written a checkpoint."""
    command = [
        sys.executable,
        "-m",
        "mfm_core",
        "run",
        str(config),
        *overrides,
        "--runs",
        str(runs),
        "--quiet",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    checkpoints = runs / "00000-tiny" / "checkpoints"
    deadline = time.monotonic() + 120
    while not list_checkpoints(checkpoints) and time.monotonic() < deadline:
        time.sleep(0.05)
    return process


LONG = ["train.steps=400", "train.checkpoint_every=50"]


def test_run_killed_with_sigkill_resumes_to_the_same_losses(tiny_config, tmp_path):
    whole = start_run(tiny_config, LONG, tmp_path / "a", progress=False)
    process = start_in_background(tiny_config, LONG, tmp_path / "b")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    run_dir = tmp_path / "b" / "00000-tiny"
    killed_at = list_checkpoints(run_dir / "checkpoints")[0][0]
    assert killed_at < 400, "the run finished before it could be killed"

    resume_run(run_dir, [], progress=False)
    assert losses(run_dir) == losses(whole)


def test_ctrl_c_saves_the_current_step_and_says_how_to_resume(tiny_config, tmp_path):
    whole = start_run(tiny_config, LONG, tmp_path / "a", progress=False)
    process = start_in_background(tiny_config, LONG, tmp_path / "b")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    run_dir = tmp_path / "b" / "00000-tiny"
    assert process.returncode == 2
    message = stderr.decode().strip().splitlines()[-1]
    assert message.startswith("error: stopped by signal 2 at step ")
    stopped_at = int(message.split(" at step ")[1].split(";")[0])
    assert stopped_at < 400
    assert f"Continue with: mfm-run --resume {run_dir}" in message
    assert list_checkpoints(run_dir / "checkpoints")[0][0] == stopped_at
    assert [step for step, _ in losses(run_dir)] == list(range(1, stopped_at + 1))

    resume_run(run_dir, [], progress=False)
    assert losses(run_dir) == losses(whole)


def test_corrupted_newest_checkpoint_falls_back_to_the_previous_one(tiny_run, caplog):
    run_dir = tiny_run
    newest = run_dir / "checkpoints" / "step-00000040.pt"
    newest.write_bytes(b"not a checkpoint")
    resume_run(run_dir, [], progress=False)
    assert "resumed from" in (run_dir / "run.log").read_text()
    assert "step-00000030.pt" in (run_dir / "run.log").read_text()

    for _, path in list_checkpoints(run_dir / "checkpoints"):
        path.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint .* is unreadable or corrupted"):
        resume_run(run_dir, [], progress=False)


def test_resume_with_an_override_that_does_not_fit_leaves_the_run_as_it_was(tiny_config, tmp_path):
    run_dir = start_run(tiny_config, ["train.steps=10"], tmp_path / "runs", progress=False)
    config_before = (run_dir / "config.toml").read_text()
    with pytest.raises(ConfigError, match=r"a resume cannot change model\.hidden \("):
        resume_run(run_dir, ["model.hidden=[16]"], progress=False)
    with pytest.raises(ConfigError, match=r"a resume cannot change train\.ema \("):
        resume_run(run_dir, ["train.ema=0.9"], progress=False)
    assert (run_dir / "config.toml").read_text() == config_before
    resume_run(run_dir, ["train.steps=12"], progress=False)
    assert [step for step, _ in losses(run_dir)] == list(range(1, 13))


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(CheckpointError, match="is not a run directory"):
        resume_run(tmp_path, [], progress=False)


def test_sample_writes_arrays_with_any_solver(tiny_run, tmp_path):
    run_dir = tiny_run
    result = sample_run(run_dir, ["solver.name=heun", "solver.steps=3"], 50, tmp_path / "s.npy")
    assert result.nfe == 6
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (50, 2) and np.isfinite(samples).all()

    (run_dir / "checkpoints" / "step-00000040.pt").write_bytes(b"torn")
    with pytest.warns(UserWarning, match="skipped checkpoint .*step-00000040.pt"):
        sample_run(run_dir, [], 10, tmp_path / "s.npz", seed=1)
    with np.load(tmp_path / "s.npz") as data:
        assert data["samples"].shape == (10, 2) and int(data["nfe"]) == 4


def test_the_same_seed_gives_the_same_run_and_another_seed_does_not(tiny_config, tmp_path):
    a = start_run(tiny_config, ["train.steps=10"], tmp_path / "a", progress=False)
    b = start_run(tiny_config, ["train.steps=10"], tmp_path / "b", progress=False)
    c = start_run(tiny_config, ["train.steps=10", "train.seed=4"], tmp_path / "c", progress=False)
    assert losses(a) == losses(b) != losses(c)
    ckpt = torch.load(a / "checkpoints" / "step-00000010.pt", weights_only=True)
    assert ckpt["step"] == 10
