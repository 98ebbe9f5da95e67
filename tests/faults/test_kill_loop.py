"""SIGKILL during checkpoint writes, again and again: every time the run resumes, and the
final loss log equals that of a run never interrupted.

A few kills run by default; ``MFM_FAULT_KILLS=N`` asks for N (e.g. 50 before a release).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from mfm_core.runner.run import resume_run, start_run
from mfm_core.runner.rundir.checkpoint import list_checkpoints, load_checkpoint
from mfm_core.runner.rundir.layout import read_log
from tests.faults.helpers import FAST, subprocess_env

KILLS = int(os.environ.get("MFM_FAULT_KILLS", "3"))
STEPS = 80 + 40 * KILLS
SETTINGS = [f"train.steps={STEPS}", "train.checkpoint_every=2", "train.keep_checkpoints=2"]


def _kill_during_a_write(command: list[str], run_dir: Path, rng: random.Random) -> bool:
    """Start ``command``, let it train a little, then SIGKILL it the moment a checkpoint's
    temporary file exists (or after a short wait). Returns whether it was still running."""
    process = subprocess.Popen(
        command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    start_step = len(read_log(run_dir))
    deadline = time.monotonic() + 120
    while len(read_log(run_dir)) < start_step + 3 and time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    wait_until = time.monotonic() + rng.uniform(0.02, 0.2)
    checkpoints = run_dir / "checkpoints"
    while time.monotonic() < wait_until + 2:
        if time.monotonic() > wait_until and any(checkpoints.glob(".*.tmp")):
            break
        time.sleep(0.001)  # leave the CPU to the run
    running = process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return running


def test_sigkill_loop_during_checkpoint_writes_resumes_to_the_same_losses(tmp_path):
    config = tmp_path / "fast.toml"
    config.write_text(FAST)
    whole = start_run(config, SETTINGS, tmp_path / "a", progress=False)
    runs = tmp_path / "b"
    run_dir = runs / "00000-fast"
    rng = random.Random(0)
    start = [sys.executable, "-m", "mfm_core", "run", str(config), *SETTINGS, "--runs",
             str(runs), "--quiet"]  # fmt: skip
    resume = [sys.executable, "-m", "mfm_core", "run", "--resume", str(run_dir), "--quiet"]
    killed = 0
    for attempt in range(KILLS):
        command = start if attempt == 0 else resume
        if not _kill_during_a_write(command, run_dir, rng):
            break  # it finished before it could be killed
        killed += 1
        saved = list_checkpoints(run_dir / "checkpoints")
        assert saved, "a kill left no checkpoint"
        load_checkpoint(saved[0][1])  # the newest one always loads
    assert killed >= min(KILLS, 2), f"only {killed} kills landed"
    resume_run(run_dir, [], progress=False)
    assert not list(run_dir.rglob("*.tmp"))
    pairs = [(r["step"], r["loss"]) for r in read_log(run_dir)]
    assert pairs == [(r["step"], r["loss"]) for r in read_log(whole)]
