"""A path the user gives is resolved and confined before anything is written: ``..`` cannot
point an evaluation at the run's own files, a mistyped folder is never created, and two
evaluations into one folder never mix."""

from __future__ import annotations

import os
import signal

import pytest

from mfm_core.runner.evaluation import reevaluate
from mfm_core.runner.rundir.lock import run_lock
from tests.faults.helpers import one_error_line


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("tail", ["x/..", "x/../.", "checkpoints/.."])
def test_eval_out_dot_dot_into_the_run_is_refused_and_changes_nothing(trained, cli, tail):
    before = _files(trained)
    status, err = cli("eval", trained, "--out", f"{trained}/{tail}")
    assert status == 2 and "not an empty folder" in one_error_line(err)
    after = _files(trained)
    after.pop(trained.joinpath("run.log").relative_to(trained), None)
    before.pop(trained.joinpath("run.log").relative_to(trained), None)
    assert after == before


def test_eval_out_in_a_missing_folder_creates_nothing(trained, tmp_path, cli):
    out = tmp_path / "missing" / "deeper" / "x"
    status, err = cli("eval", trained, "--out", out)
    assert status == 2 and "does not exist" in one_error_line(err)
    assert not (tmp_path / "missing").exists()


def test_eval_out_a_new_or_empty_folder_holds_only_the_results(trained, tmp_path, cli):
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        status, err = cli("eval", trained, "--out", out)
        assert status == 0, err
        assert (out / "metrics.json").is_file() and not (out / ".lock").exists()
        status, err = cli("eval", trained, "--out", out)  # a second one into it: refused
        assert status == 2 and "not an empty folder" in one_error_line(err)


def test_two_evaluations_into_one_folder_never_mix(trained, tmp_path, cli):
    out = tmp_path / "shared"
    out.mkdir()
    with run_lock(out):  # another evaluation is writing there right now
        status, err = cli("eval", trained, "--out", out)
    assert status == 2 and "in use by another mfm process" in one_error_line(err)
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_sigterm_during_eval_says_so_and_leaves_no_folder(trained, cli, monkeypatch):
    real = reevaluate.evaluate

    def evaluate_then_terminated(*args, **kwargs):
        result = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, as `kill` sends it
        return result

    monkeypatch.setattr(reevaluate, "evaluate", evaluate_then_terminated)
    status, err = cli("eval", trained)
    assert status == 128 + signal.SIGTERM
    assert one_error_line(err) == "error: stopped by SIGTERM"
    assert not any((trained / "evals").iterdir())


def test_a_failed_eval_into_out_keeps_a_folder_it_did_not_make_and_removes_its_files(
    trained, tmp_path, cli, monkeypatch
):
    out = tmp_path / "given"
    out.mkdir()

    def failing(directory, config, metrics, samples):
        (directory / "metrics.json").write_text("{}")
        raise OSError(28, "No space left on device", str(directory / "metrics.md"))

    monkeypatch.setattr(reevaluate, "write_results", failing)
    status, _ = cli("eval", trained, "--out", out)
    assert status == 2
    assert out.is_dir() and list(out.iterdir()) == []


def test_sample_out_in_a_missing_folder_is_an_error_and_creates_nothing(trained, tmp_path, cli):
    for out in (tmp_path / "nodir" / "s.npy", tmp_path / "nodir" / "s.npz"):
        status, err = cli("sample", trained, "--num", "5", "--out", out)
        assert status == 2 and "does not exist" in one_error_line(err)
    assert not (tmp_path / "nodir").exists()
    status, err = cli("sample", trained, "--num", "5", "--out", tmp_path / "x" / ".." / "s.npy")
    assert status == 0 and (tmp_path / "s.npy").is_file()  # `..` resolved: x/ is not made
    assert not (tmp_path / "x").exists()


def test_fid_stats_out_and_runs_in_a_missing_folder_create_nothing(fast_config, tmp_path, cli):
    status, err = cli("fid-stats", fast_config, "--num", "4", "--features", "identity",
                      "--out", tmp_path / "nodir" / "ref.npz")  # fmt: skip
    assert status == 2 and "does not exist" in one_error_line(err)
    status, err = cli("run", fast_config, "--runs", tmp_path / "nodir" / "runs", "--quiet")
    assert status == 2 and "cannot make the directory" in one_error_line(err)
    assert not (tmp_path / "nodir").exists()


def test_eval_out_an_existing_file_is_refused_and_kept(trained, tmp_path, cli):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    status, err = cli("eval", trained, "--out", out)
    assert status == 2 and "is a file" in one_error_line(err)
    assert out.read_text() == "mine"
