"""Rotation deletes only what the run wrote and verified; killed writes leave no debris;
checkpoints never execute code; a full disk stops the run with its checkpoints intact."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

from mfm_core.config import read_toml
from mfm_core.runner.run import resume_run, start_run
from mfm_core.runner.rundir.checkpoint import list_checkpoints, load_checkpoint
from mfm_core.runner.rundir.layout import read_log
from tests.faults.helpers import one_error_line, subprocess_env


def test_junk_checkpoints_named_like_later_steps_are_left_alone(fast_config, tmp_path):
    run_dir = start_run(fast_config, ["train.steps=4"], tmp_path, progress=False)
    junk = [run_dir / "checkpoints" / f"step-0000090{i}.pt" for i in (0, 1)]
    for path in junk:
        path.write_bytes(b"junk")
    resume_run(run_dir, ["train.steps=10"], progress=False)
    steps = [step for step, _ in list_checkpoints(run_dir / "checkpoints")]
    assert steps == [901, 900, 10, 8]
    load_checkpoint(run_dir / "checkpoints" / "step-00000010.pt")
    assert all(path.read_bytes() == b"junk" for path in junk)


def test_resumed_run_rotates_its_own_older_checkpoints(fast_config, tmp_path):
    run_dir = start_run(fast_config, ["train.steps=4"], tmp_path, progress=False)
    resume_run(run_dir, ["train.steps=10"], progress=False)
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [10, 8]


def test_after_a_resume_rotation_deletes_the_oldest_checkpoint_first(fast_config, tmp_path):
    overrides = ["train.steps=4", "train.checkpoint_every=1", "train.keep_checkpoints=3"]
    run_dir = start_run(fast_config, overrides, tmp_path, progress=False)
    steps = [s for s, _ in list_checkpoints(run_dir / "checkpoints")]
    assert steps == [4, 3, 2]
    for end, kept in ((5, [5, 4, 3]), (6, [6, 5, 4])):  # one checkpoint per resume
        resume_run(run_dir, [f"train.steps={end}"], progress=False)
        assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == kept
    # Resumed from an older checkpoint (the newer ones removed): the oldest goes first still.
    for path in (run_dir / "checkpoints").iterdir():
        if path.name > "step-00000004.pt":
            path.unlink()
    resume_run(run_dir, ["train.steps=5"], progress=False)
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [5, 4]


def test_stale_temporaries_are_removed_on_the_next_start(fast_config, tmp_path):
    run_dir = start_run(fast_config, ["train.steps=2"], tmp_path, progress=False)
    ours = [
        run_dir / "checkpoints" / ".step-00000004.pt.a1b2c3d4.tmp",
        run_dir / ".metrics.json.zz_9k2l1.tmp",
        run_dir / ".log.jsonl.abcdefgh.tmp",
    ]
    theirs = [run_dir / ".notes.txt.abcdefgh.tmp", run_dir / "checkpoints" / "mine.tmp"]
    for path in ours + theirs:
        path.write_bytes(b"x")
    resume_run(run_dir, ["train.steps=4"], progress=False)
    assert not any(path.exists() for path in ours)
    assert all(path.exists() for path in theirs)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MFM_EXPLOIT_MARKER']}",))


def test_a_malicious_pickle_in_checkpoints_never_executes(fast_config, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MFM_EXPLOIT_MARKER", str(marker))
    run_dir = start_run(fast_config, ["train.steps=2"], tmp_path / "runs", progress=False)
    evil = run_dir / "checkpoints" / "step-00000099.pt"
    torch.save({"step": 99, "model": _Exploit()}, evil)
    with evil.open("rb") as handle:  # the file really would run code if unpickled
        assert b"system" in handle.read()
    resume_run(run_dir, ["train.steps=4"], progress=False)
    assert "skipped checkpoint" in (run_dir / "run.log").read_text()
    from mfm_core.runner.assembly.loading import load_run

    with pytest.warns(UserWarning, match="step-00000099.pt"):
        assert load_run(run_dir).step == 4
    assert not marker.exists()
    with pytest.raises(Exception), open(evil, "rb") as handle:  # noqa: B017 - any refusal
        pickle.Unpickler(handle)  # the zip is not a bare pickle either
        raise RuntimeError


def _failing_save(after: int):
    real = torch.save
    calls = {"n": 0}

    def save(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, handle, *args, **kwargs)

    return save


def test_disk_full_while_checkpointing_stops_cleanly_and_resumes_exactly(
    fast_config, tmp_path, cli, monkeypatch
):
    whole = start_run(fast_config, ["train.steps=8"], tmp_path / "a", progress=False)
    monkeypatch.setattr(torch, "save", _failing_save(after=2))
    runs = tmp_path / "b"
    status, err = cli("run", fast_config, "train.steps=8", "--runs", runs, "--quiet")
    assert status == 2
    assert "disk is full" in one_error_line(err)
    run_dir = runs / "00000-fast"
    checkpoints = run_dir / "checkpoints"
    assert [s for s, _ in list_checkpoints(checkpoints)] == [4, 2]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000002.pt", "step-00000004.pt"]
    monkeypatch.undo()
    resume_run(run_dir, [], progress=False)
    pairs = [(r["step"], r["loss"]) for r in read_log(run_dir)]
    assert pairs == [(r["step"], r["loss"]) for r in read_log(whole)]


def test_disk_full_while_writing_results_keeps_the_checkpoints(
    fast_config, tmp_path, cli, monkeypatch
):
    import mfm_core.runner.evaluation.results as results

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(results, "write_json", full)
    status, err = cli("run", fast_config, "--runs", tmp_path, "--quiet")
    assert status == 2
    line = one_error_line(err)
    assert "metrics.json" in line and "disk is full" in line
    assert [s for s, _ in list_checkpoints(tmp_path / "00000-fast" / "checkpoints")] == [6, 4]


def test_disk_full_on_a_real_small_tmpfs(fast_config, tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"mount is not permitted here: {done.stderr.decode().strip()}")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mfm_core", "run", str(fast_config), "model.hidden=[128,128]",
             "--runs", str(mount), "--quiet"],
            capture_output=True, env=subprocess_env(), timeout=300,
        )  # fmt: skip
        lines = result.stderr.decode().strip().splitlines()
        assert result.returncode == 2, lines
        assert "disk is full" in one_error_line(lines)
        run_dir = mount / "00000-fast"
        assert not [p for p in run_dir.rglob("*.tmp")]
        written = read_toml(run_dir / "config.toml")
        assert written["model"]["hidden"] == [128, 128]  # whole, not cut off by the full disk
    finally:
        subprocess.run(["umount", str(mount)], check=False)
