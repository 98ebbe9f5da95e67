"""Run directories: robust numbering, concurrent starts, one process per run, resumed
optimizer settings that really apply."""

from __future__ import annotations

import math
import subprocess
import sys
import threading

import pytest

from mfm_core.errors import ConfigError
from mfm_core.runner.run import resume_run, start_run
from mfm_core.runner.rundir.checkpoint import list_checkpoints, load_checkpoint
from mfm_core.runner.rundir.layout import create_run_dir, read_log
from mfm_core.runner.rundir.lock import RunLockedError, run_lock
from tests.faults.helpers import one_error_line, subprocess_env


def test_numbering_goes_past_any_existing_number(tmp_path):
    (tmp_path / "99999-old").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "7-x").mkdir()
    assert create_run_dir(tmp_path, "t").name == "100000-t"
    assert create_run_dir(tmp_path, "t").name == "100001-t"


def test_concurrent_creation_never_shares_a_directory(tmp_path):
    made, barrier = [], threading.Barrier(8)

    def make():
        barrier.wait()
        made.append(create_run_dir(tmp_path, "t"))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in made) == [f"{i:05d}-t" for i in range(8)]


def test_runs_pointing_at_a_file_is_one_error_line(fast_config, tmp_path, cli):
    target = tmp_path / "afile"
    target.write_text("keep")
    status, err = cli("run", fast_config, "--runs", target, "--quiet")
    assert status == 2 and "--runs" in one_error_line(err)
    assert target.read_text() == "keep"
    with pytest.raises(ConfigError, match="--runs"):
        create_run_dir(target / "sub", "t")


def test_concurrent_starts_make_two_complete_runs(fast_config, tmp_path):
    command = [sys.executable, "-m", "mfm_core", "run", str(fast_config), "--runs",
               str(tmp_path / "runs"), "--quiet"]  # fmt: skip
    processes = [
        subprocess.Popen(command, env=subprocess_env(), stderr=subprocess.PIPE) for _ in range(2)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()
    runs = sorted((tmp_path / "runs").iterdir())
    assert [p.name for p in runs] == ["00000-fast", "00001-fast"]
    assert all((p / "metrics.json").is_file() for p in runs)
    pairs = [[(r["step"], r["loss"]) for r in read_log(run)] for run in runs]
    assert pairs[0] == pairs[1] and len(pairs[0]) == 6


def test_a_locked_run_refuses_a_second_resume_and_is_left_as_it_was(fast_config, tmp_path, cli):
    run_dir = start_run(fast_config, ["train.steps=4"], tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with run_lock(run_dir):
        with pytest.raises(RunLockedError, match="in use by another mfm process"):
            resume_run(run_dir, ["train.steps=8"], progress=False)
        status, err = cli("run", "--resume", run_dir, "train.steps=8", "--quiet")
        assert status == 2 and "in use" in one_error_line(err)
        status, err = cli("eval", run_dir)
        assert status == 2 and "in use" in one_error_line(err)
    after = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    before.pop("run.log"), after.pop("run.log")
    assert after == before
    resume_run(run_dir, ["train.steps=8"], progress=False)  # free again once released
    assert [r["step"] for r in read_log(run_dir)] == list(range(1, 9))


# A real resume that, once it holds the run's lock, says so and waits for a line on stdin
# before it trains: the test decides when the first resume goes on, not the machine's speed.
PAUSED_RESUME = """
import sys
from pathlib import Path
from mfm_core.runner import run

real = run.remove_stale_temporaries  # called by resume_run just after it takes the lock

def pause(run_dir):
    print("locked", flush=True)
    sys.stdin.readline()
    return real(run_dir)

run.remove_stale_temporaries = pause
run.resume_run(Path(sys.argv[1]), sys.argv[2:], progress=False)
"""


def test_two_resumes_at_once_one_trains_one_is_refused(fast_config, tmp_path):
    run_dir = start_run(fast_config, ["train.steps=2"], tmp_path, progress=False)
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSED_RESUME, str(run_dir), "train.steps=6"],
        env=subprocess_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert first.stdout.readline().strip() == "locked"
        before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
        command = [sys.executable, "-m", "mfm_core", "run", "--resume", str(run_dir),
                   "train.steps=9", "--quiet"]  # fmt: skip
        second = subprocess.run(command, env=subprocess_env(), capture_output=True, timeout=300)
        lines = second.stderr.decode().strip().splitlines()
        assert second.returncode == 2 and "in use by another mfm process" in one_error_line(lines)
        after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
        assert after == before  # the refused one touched nothing
        first.stdin.write("go\n")
        first.stdin.flush()
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
        first.wait()
    assert [r["step"] for r in read_log(run_dir)] == list(range(1, 7))
    assert list_checkpoints(run_dir / "checkpoints")[0][0] == 6


def test_resume_applies_changed_optimizer_settings(fast_config, tmp_path):
    run_dir = start_run(fast_config, ["train.steps=4"], tmp_path, progress=False)
    resume_run(run_dir, ["train.steps=8", "train.lr=0.5", "train.weight_decay=0.3"], False)
    assert [r["lr"] for r in read_log(run_dir)] == [1e-3] * 4 + [0.5] * 4
    state = load_checkpoint(run_dir / "checkpoints" / "step-00000008.pt")
    group = state["optimizer"]["param_groups"][0]
    assert (group["lr"], group["weight_decay"], group["initial_lr"]) == (0.5, 0.3, 0.5)
    text = (run_dir / "config.toml").read_text()
    assert "lr = 0.5" in text and "weight_decay = 0.3" in text


def test_resume_with_a_new_schedule_follows_it(fast_config, tmp_path):
    run_dir = start_run(fast_config, ["train.steps=4"], tmp_path, progress=False)
    resume_run(run_dir, ["train.steps=8", "train.lr_schedule='cosine'"], False)
    lrs = [r["lr"] for r in read_log(run_dir)][4:]
    assert lrs == pytest.approx(
        [1e-3 * 0.5 * (1 + math.cos(math.pi * s / 8)) for s in (4, 5, 6, 7)]
    )
