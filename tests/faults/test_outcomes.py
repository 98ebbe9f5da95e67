"""Every way a run ends gives an honest exit status, and the run directory says how it ended
(``outcome.json``, the last line of ``run.log``): done, failed with the message, diverged or
interrupted. A plugin that ends the process or corrupts its inputs fails the run, named."""

from __future__ import annotations

import json
import os
import shlex
import signal

import pytest
import torch

from mfm_core.errors import MfmError
from mfm_core.runner.rundir import checkpoint
from mfm_core.runner.rundir.checkpoint import list_checkpoints
from mfm_core.runner.rundir.layout import read_log
from mfm_core.runner.rundir.outcome import read_outcome
from mfm_core.runner.training import distributed
from mfm_core.runner.training.distributed import Distributed, process_group
from tests.faults.helpers import one_error_line


def _on_call(number: int, action):
    """An independent coupler that runs ``action(x0, x1)`` at its ``number``-th call."""
    calls = {"n": 0}

    def coupler(x0, x1):
        calls["n"] += 1
        if calls["n"] == number:
            action(x0, x1)
        return torch.arange(len(x0)), torch.arange(len(x1))

    return coupler


def _run_dir(runs):
    (run_dir,) = runs.iterdir()
    return run_dir


def test_a_finished_run_records_done(trained):
    record = read_outcome(trained)
    assert (record["outcome"], record["step"], record["message"]) == ("done", 2, "")


@pytest.mark.parametrize(
    ("raised", "shown"),
    [(SystemExit(0), "SystemExit(0)"), (KeyboardInterrupt(), "KeyboardInterrupt()")],
    ids=["system-exit-0", "keyboard-interrupt"],
)
@pytest.mark.parametrize("overlap", ["on", "off"])
def test_a_plugin_ending_the_process_fails_the_run_naming_it(
    fast_config, tmp_path, cli, coupler_plugin, raised, shown, overlap
):
    def end(x0, x1):
        raise raised

    coupler_plugin("ender", _on_call(4, end))
    runs = tmp_path / "runs"
    overrides = ["coupler.name=ender", f"train.overlap_coupling={overlap!r}"]
    status, err = cli("run", fast_config, *overrides, "--runs", runs, "--quiet")
    assert status == 2  # neither 0 (SystemExit(0)) nor 130 (the user's Ctrl-C)
    line = one_error_line(err)
    assert "coupler 'ender'" in line and "plugin 'ender'" in line and shown in line
    run_dir = _run_dir(runs)
    record = read_outcome(run_dir)
    assert record["outcome"] == "failed" and shown in record["message"]
    assert "failed at step" in (run_dir / "run.log").read_text().splitlines()[-1]
    assert list_checkpoints(run_dir / "checkpoints")  # the steps before it are saved
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize(
    "raised", [SystemExit(0), ValueError("a bug in the plugin")], ids=["system-exit", "error"]
)
def test_a_failing_coupler_saves_the_last_step_and_the_run_resumes_exactly(
    fast_config, tmp_path, cli, coupler_plugin, raised
):
    def end(x0, x1):
        raise raised

    overrides = ["coupler.name=ender", "train.overlap_coupling='off'", "train.checkpoint_every=2"]
    coupler_plugin("ender", _on_call(4, end))  # the coupling of step 4
    status, _ = cli("run", fast_config, *overrides, "--runs", tmp_path / "a", "--quiet")
    assert status == (2 if isinstance(raised, SystemExit) else 1)  # 1: a bug (the plugin's)
    run_dir = _run_dir(tmp_path / "a")
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [3, 2]
    assert [r["step"] for r in read_log(run_dir)] == [1, 2, 3]
    assert read_outcome(run_dir)["step"] == 3
    coupler_plugin("ender", _on_call(0, end))  # fixed: never fails
    assert cli("run", "--resume", run_dir, "--quiet")[0] == 0
    assert cli("run", fast_config, *overrides, "--runs", tmp_path / "b", "--quiet")[0] == 0
    whole = _run_dir(tmp_path / "b")
    assert read_log(run_dir) == [
        {**r, "time": a["time"]} for r, a in zip(read_log(whole), read_log(run_dir), strict=True)
    ]


def test_a_plugin_exiting_during_validate_is_an_error_naming_it(fast_config, cli, coupler_plugin):
    def end(x0, x1):
        raise SystemExit(0)

    coupler_plugin("ender", end)
    status, err = cli("validate", fast_config, "coupler.name=ender")
    assert status == 2
    assert "coupler 'ender'" in one_error_line(err) and "SystemExit(0)" in err[-1]


def test_ctrl_c_records_interrupted_and_says_how_to_continue(
    fast_config, tmp_path, cli, coupler_plugin
):
    coupler_plugin("ctrl-c", _on_call(3, lambda x0, x1: os.kill(os.getpid(), signal.SIGINT)))
    runs = tmp_path / "a b $(touch PWNED)"
    runs.mkdir()
    status, err = cli("run", fast_config, "coupler.name=ctrl-c", "--runs", runs, "--quiet")
    assert status == 2
    line = one_error_line(err)
    run_dir = _run_dir(runs)
    assert shlex.split(line.partition("Continue with: ")[2]) == [
        "mfm-run",
        "--resume",
        str(run_dir),
    ]
    assert read_outcome(run_dir)["outcome"] == "interrupted"


def test_ctrl_c_during_compare_advises_resuming_the_comparison(
    fast_config, tmp_path, cli, coupler_plugin
):
    coupler_plugin("ctrl-c", _on_call(3, lambda x0, x1: os.kill(os.getpid(), signal.SIGINT)))
    runs = tmp_path / "runs"
    status, err = cli("compare", fast_config, "coupler.name=ctrl-c,independent", "--runs", runs,
                      "--quiet")  # fmt: skip
    assert status == 2
    line = one_error_line(err)
    (directory,) = runs.iterdir()
    command = shlex.split(line.partition("Continue with: ")[2])
    assert command == ["mfm", "compare", "--resume", str(directory)]


def test_a_diverged_run_records_diverged(fast_config, tmp_path, cli):
    runs = tmp_path / "runs"
    status, _ = cli("run", fast_config, "train.lr=1e6", "train.steps=30", "--runs", runs, "--quiet")
    assert status == 2
    record = read_outcome(_run_dir(runs))
    assert record["outcome"] == "diverged" and "not finite" in record["message"]


@pytest.mark.parametrize("overlap", ["on", "off"])
@pytest.mark.parametrize("side", ["x0", "x1"])
def test_a_coupler_changing_its_inputs_in_place_fails_naming_it(
    fast_config, tmp_path, cli, coupler_plugin, overlap, side
):
    def zero(x0, x1):
        (x0 if side == "x0" else x1).mul_(0)

    coupler_plugin("zeroes", _on_call(5, zero))
    runs = tmp_path / "runs"
    overrides = ["coupler.name=zeroes", f"train.overlap_coupling={overlap!r}"]
    status, err = cli("run", fast_config, *overrides, "--runs", runs, "--quiet")
    assert status == 2
    line = one_error_line(err)
    assert "coupler 'zeroes'" in line and "changed its inputs" in line
    run_dir = _run_dir(runs)
    assert read_outcome(run_dir)["outcome"] == "failed"
    # No checkpoint holds a step trained after the change (the fifth coupling: step 5).
    assert all(step < 5 for step, _ in list_checkpoints(run_dir / "checkpoints"))


def test_a_coupler_that_only_reads_its_inputs_trains_as_before(fast_config, tmp_path, cli,
                                                               coupler_plugin):  # fmt: skip
    coupler_plugin("reader", _on_call(5, lambda x0, x1: (x0.sum(), x1.clone().mul_(0))))
    status, err = cli("run", fast_config, "coupler.name=reader", "--runs", tmp_path, "--quiet")
    assert status == 0, err


def test_checkpoints_that_cannot_be_written_are_found_before_training(
    fast_config, tmp_path, cli, monkeypatch
):
    real = checkpoint.tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and os.path.basename(dir) == "checkpoints":
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", refuse)
    runs = tmp_path / "runs"
    status, err = cli("run", fast_config, "--runs", runs, "--quiet")
    assert status == 2
    assert "checkpoints cannot be written there" in one_error_line(err)
    run_dir = _run_dir(runs)
    assert read_log(run_dir) == []  # not a single step trained
    assert json.loads((run_dir / "outcome.json").read_text())["outcome"] == "failed"


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer"),
        RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 1800000ms"),
        distributed.dist.DistBackendError("NCCL communicator was aborted on rank 1"),
    ],
)
def test_a_peer_that_died_is_not_reported_as_a_bug(monkeypatch, failure):
    for name in ("init_process_group", "destroy_process_group"):
        monkeypatch.setattr(distributed.dist, name, lambda *a, **k: None)
    env = Distributed(rank=1, world_size=2, local_rank=1)
    with pytest.raises(MfmError, match="another process of this run stopped"):
        with process_group(env, torch.device("cpu")):
            raise failure
    with pytest.raises(RuntimeError, match="^an error of this process$"):
        with process_group(env, torch.device("cpu")):
            raise RuntimeError("an error of this process")
