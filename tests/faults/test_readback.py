"""What mfm reads back is checked, and one bad file never blocks the good ones: a torch file
mfm did not write is skipped like a corrupted checkpoint; a bad line of ``log.jsonl`` costs
that line only."""

from __future__ import annotations

import json

import pytest
import torch

from mfm_core.errors import CheckpointError
from mfm_core.runner.rundir.checkpoint import list_checkpoints, load_checkpoint
from mfm_core.runner.rundir.layout import read_log


@pytest.mark.parametrize(
    "foreign",
    [
        lambda state: state["model"],  # a plain state dict
        lambda state: {**state, "step": "900"},  # a step that is not a number
    ],
    ids=["state-dict", "step-a-string"],
)
def test_a_torch_file_mfm_did_not_write_is_skipped_by_every_reader(trained, tmp_path, cli, foreign):
    good = load_checkpoint(trained / "checkpoints" / "step-00000002.pt")
    stranger = trained / "checkpoints" / "step-00000900.pt"
    torch.save(foreign(good), stranger)
    for command in (["sample", trained, "--num", "4", "--out", tmp_path / "s.npy"],
                    ["eval", trained], ["run", "--resume", trained, "train.steps=4"]):  # fmt: skip
        status, err = cli(*command)
        assert status == 0, err
        assert any("skipped checkpoint" in line and "step-00000900.pt" in line for line in err)
        assert any("not one this mfm wrote" in line for line in err)
    assert json.loads((trained / "metrics.json").read_text())["train"]["steps"] == 4
    assert stranger.exists()  # not the run's to delete
    assert [s for s, _ in list_checkpoints(trained / "checkpoints")][:1] == [900]


@pytest.mark.parametrize(
    "bad", ['{"step": 3, "loss": 0.5', "[1, 2]", '{"loss": 1.0}'], ids=["torn", "list", "no-step"]
)
def test_a_bad_line_in_the_middle_of_the_log_costs_that_line_only(fast_config, cli, tmp_path,
                                                                  bad):  # fmt: skip
    runs = tmp_path / "runs"
    assert cli("run", fast_config, "--runs", runs, "--quiet")[0] == 0
    (run_dir,) = runs.iterdir()
    log = run_dir / "log.jsonl"
    lines = log.read_text().splitlines()
    lines[2] = bad  # step 3 of 6
    log.write_text("\n".join(lines) + "\n")
    assert [r["step"] for r in read_log(run_dir)] == [1, 2, 4, 5, 6]
    status, err = cli("run", "--resume", run_dir, "train.steps=8", "--quiet")
    assert status == 0, err
    assert any("line(s) 3 are not log records" in line for line in err)
    assert [r["step"] for r in read_log(run_dir)] == [1, 2, 4, 5, 6, 7, 8]


def test_a_torn_last_line_is_dropped_without_a_warning(trained, cli):
    log = trained / "log.jsonl"
    log.write_text(log.read_text() + '{"step": 3, "lo')
    status, err = cli("run", "--resume", trained, "train.steps=4", "--quiet")
    assert status == 0, err
    assert not any("not log records" in line for line in err)
    assert [r["step"] for r in read_log(trained)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "content",
    [[torch.zeros(1)], {"step": 1}, {"step": True, "elapsed": 0.0, "world_size": 1,
     "model": {}, "ranks": []}, {"step": 1, "elapsed": 0.0, "world_size": 1, "model": {}}],
    ids=["a-list", "only-a-step", "step-a-bool", "no-ranks"],
)  # fmt: skip
def test_load_checkpoint_refuses_what_mfm_did_not_write(tmp_path, content):
    path = tmp_path / "step-00000001.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="not one this mfm wrote"):
        load_checkpoint(path)


def test_read_log_leaves_out_every_line_that_is_not_a_record(tmp_path):
    lines = ['{"step": 1}', "5", '"text"', "null", '{"step": "2"}', "\udcff", '{"step": 3}', "{"]
    (tmp_path / "log.jsonl").write_text("\n".join(lines), errors="surrogateescape")
    problems: list[int] = []
    assert [r["step"] for r in read_log(tmp_path, problems)] == [1, 3]
    assert problems == [2, 3, 4, 5, 6]  # the torn last line is expected, not a problem
