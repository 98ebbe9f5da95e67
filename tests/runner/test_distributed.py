"""Two training processes under torchrun (gloo on the CPU): one run directory, disjoint data
shards, a checkpoint holding both processes' state that resumes exactly, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mfm_core.errors import CheckpointError
from mfm_core.runner.run import resume_run
from mfm_core.runner.rundir.checkpoint import load_checkpoint
from mfm_core.runner.rundir.layout import read_log

SHORT = ["train.batch_size=8", "train.checkpoint_every=3", "eval.grid=1", "model.dropout=0.1"]


def torchrun(
    env: dict[str, str], *args: str, entry: list[str] | None = None, logs: Path | None = None
):
    """``mfm run`` (or ``entry``) in two processes; with ``logs``, each process's stderr goes
    to its own file ``logs/<job>/attempt_0/<rank>/stderr.log`` instead of the shared pipe."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    if logs is not None:
        command += ["--log-dir", str(logs), "--redirects", "2"]
    command += ["--nproc_per_node=2", *(entry or ["-m", "mfm_core", "run"]), *args, "--quiet"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_log(run_dir)]


def test_two_processes_train_one_run_on_disjoint_shards_and_resume_exactly(
    image_config, plugin_env, tmp_path
):
    reads = tmp_path / "reads"
    whole = torchrun(
        {**plugin_env, "TINY_READ_LOG": str(reads)},
        str(image_config),
        *SHORT,
        "train.steps=8",
        "--runs",
        str(tmp_path / "a"),
    )
    assert whole.returncode == 0, whole.stderr
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["00000-tinyimg"]
    run_dir = tmp_path / "a" / "00000-tinyimg"
    # Reported once, by rank 0: the summary, then the run directory.
    lines = whole.stdout.strip().splitlines()
    assert lines[-1] == f"done: {run_dir}" and len([x for x in lines if "done:" in x]) == 1
    assert len([x for x in lines if x.startswith("evaluated ")]) == 1
    assert [step for step, _ in losses(run_dir)] == list(range(1, 9))
    assert (run_dir / "metrics.json").is_file() and (run_dir / "samples.png").is_file()
    # 64 images, 32 per process, 4 per process and step: 8 steps are one epoch of each shard
    shards = [Path(f"{reads}.{rank}").read_text().split()[:32] for rank in (0, 1)]
    assert all(len(set(shard)) == 32 for shard in shards)
    assert not set(shards[0]) & set(shards[1])

    checkpoint = load_checkpoint(run_dir / "checkpoints" / "step-00000006.pt")
    assert checkpoint["world_size"] == 2 and len(checkpoint["ranks"]) == 2
    generators = [rank["generator"] for rank in checkpoint["ranks"]]
    assert not generators[0].equal(generators[1])  # each process its own noise

    part = torchrun(
        plugin_env, str(image_config), *SHORT, "train.steps=6", "--runs", str(tmp_path / "b")
    )
    assert part.returncode == 0, part.stderr
    part_dir = tmp_path / "b" / "00000-tinyimg"
    resumed = torchrun(plugin_env, "--resume", str(part_dir), "train.steps=8")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(part_dir) == losses(run_dir)
    # the EMA weights (kept by rank 0 alone) resumed too: the evaluation is the same
    final = [
        json.loads((d / "metrics.json").read_text())["final_loss"] for d in (run_dir, part_dir)
    ]
    assert final[0] == final[1]


def test_resuming_with_another_number_of_processes_is_a_clear_error(
    image_config, plugin_env, tmp_path, tiny_plugin
):
    done = torchrun(plugin_env, str(image_config), *SHORT, "train.steps=3", "--runs", str(tmp_path))
    assert done.returncode == 0, done.stderr
    with pytest.raises(CheckpointError, match="were written by 2 processes; resume with the same"):
        resume_run(tmp_path / "00000-tinyimg", [], progress=False)


def test_a_config_error_stops_every_process_with_one_message_each(
    image_config, plugin_env, tmp_path
):
    # The console script of the interpreter running the tests (not whichever is on PATH);
    # each process's stderr in its own file, since lines written to one pipe may interleave.
    mfm_run = Path(sys.executable).parent / "mfm-run"
    assert mfm_run.is_file(), f"{mfm_run} is not installed"
    logs = tmp_path / "logs"
    failed = torchrun(
        plugin_env, str(image_config), "train.batch_size=7", entry=[str(mfm_run)], logs=logs
    )
    assert failed.returncode != 0
    message = "$.train.batch_size: the global batch of 7 does not split evenly over 2 processes"
    expected = {"0": f"error: {message}", "1": f"error: [rank 1] {message}"}
    errors = {}
    for log in logs.glob("*/attempt_0/*/stderr.log"):
        lines = log.read_text().splitlines()
        assert "Traceback (most recent call last):" not in lines
        errors[log.parent.name] = [line for line in lines if line.startswith("error: ")]
    assert errors == {rank: [line] for rank, line in expected.items()}


def test_global_scope_couples_across_processes_and_resumes_exactly(
    image_config, plugin_env, tmp_path
):
    # A random coupler (heuristic, from a random start), the whole batch solved on rank 0;
    # dropout 0.1 (SHORT) and data through the loader on both processes.
    overrides = [*SHORT, "coupler.name=heuristic", "coupler.scope=global"]
    whole = torchrun(
        plugin_env, str(image_config), *overrides, "train.steps=4", "--runs", str(tmp_path / "a")
    )
    assert whole.returncode == 0, whole.stderr
    run_dir = tmp_path / "a" / "00000-tinyimg"
    assert "coupled 8 (all processes together) at a time" in (run_dir / "run.log").read_text()
    part = torchrun(
        plugin_env,
        str(image_config),
        *overrides,
        "train.steps=2",
        "train.checkpoint_every=2",
        "--runs",
        str(tmp_path / "b"),
    )
    assert part.returncode == 0, part.stderr
    part_dir = tmp_path / "b" / "00000-tinyimg"
    resumed = torchrun(plugin_env, "--resume", str(part_dir), "train.steps=4")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(part_dir) == losses(run_dir)
