"""What mfm reads back is checked, and one bad file never blocks the good ones: a torch file
mfm did not write is skipped like a corrupted checkpoint; a bad line of ``log.jsonl`` costs
that line only."""

from __future__ import annotations

import json

import pytest
import torch

from mfm_core.runner.rundir.checkpoint import list_checkpoints, load_checkpoint
from mfm_core.runner.rundir.layout import read_log


@pytest.mark.parametrize(
    "foreign",
    [
        lambda state: state["model"],  # a plain state dict
        lambda state: {**state, "step": "900"},  # a step that is not a number
        lambda state: [state["model"]],  # not a dict at all
        lambda state: {k: v for k, v in state.items() if k != "ranks"},
    ],
    ids=["state-dict", "step-a-string", "a-list", "no-ranks"],
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
    "bad", ['{"step": 3, "loss": 0.5', "[1, 2]", "5", '"text"', '{"loss": 1.0}', "\xff"]
)
def test_a_bad_line_in_the_middle_of_the_log_costs_that_line_only(fast_config, cli, tmp_path,
                                                                  bad):  # fmt: skip
    runs = tmp_path / "runs"
    assert cli("run", fast_config, "--runs", runs, "--quiet")[0] == 0
    (run_dir,) = runs.iterdir()
    log = run_dir / "log.jsonl"
    lines = log.read_text().splitlines()
    lines[2] = bad  # step 3 of 6
    log.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
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
