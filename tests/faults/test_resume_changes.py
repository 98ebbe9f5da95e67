"""The run directory always describes what was trained: a resume may train longer, with other
optimizer, compute and evaluation settings, but it may not change the experiment (by an
override or by editing ``config.toml``), nor make the run shorter than it is."""

from __future__ import annotations

import pytest
import tomli_w

from mfm_core.config import read_toml
from mfm_core.runner.assembly.experiment import CHANGEABLE, changed_keys
from mfm_core.runner.rundir.layout import read_log
from mfm_core.runner.rundir.outcome import read_outcome
from tests.faults.helpers import one_error_line


def test_a_resume_cannot_make_the_run_shorter(trained, cli):
    config = (trained / "config.toml").read_text()
    status, err = cli("run", "--resume", trained, "train.steps=1", "--quiet")
    assert status == 2
    assert "train.steps: 1, but" in one_error_line(err) and "2 steps already" in err[-1]
    assert (trained / "config.toml").read_text() == config
    assert read_outcome(trained)["outcome"] == "done"
    assert cli("run", "--resume", trained, "train.steps=2", "--quiet")[0] == 0  # as long: fine


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("data.target.name", "moons"),
        ("coupler.name", "exact"),
        ("model.hidden", [16, 32]),
        ("path.name", "vp"),
        ("train.seed", 4),
        ("train.batch_size", 8),
        ("train.ema", 0.5),
    ],
)
def test_editing_config_toml_to_another_experiment_is_refused(trained, cli, key, value):
    path = trained / "config.toml"
    data = read_toml(path)
    *tables, last = key.split(".")
    table = data
    for name in tables:
        table = table[name]
    assert last in table and table[last] != value
    table[last] = value
    path.write_text(tomli_w.dumps(data))
    log = read_log(trained)
    status, err = cli("run", "--resume", trained, "train.steps=4", "--quiet")
    assert status == 2
    line = one_error_line(err)
    assert f"a resume cannot change {key} (" in line
    assert read_log(trained) == log  # nothing trained
    assert read_outcome(trained)["outcome"] == "done"  # the run is still what it was


def test_an_override_to_another_experiment_is_refused_too(trained, cli):
    status, err = cli("run", "--resume", trained, "coupler.name=exact", "train.steps=4")
    assert status == 2 and "a resume cannot change coupler.name" in one_error_line(err)


def test_a_resume_may_change_what_does_not_change_the_experiment(trained, cli):
    allowed = ["train.steps=4", "train.lr=0.01", "train.log_every=2", "eval.num_samples=30",
               "solver.steps=3", "train.keep_checkpoints=3", "data.workers=0"]  # fmt: skip
    status, err = cli("run", "--resume", trained, *allowed, "--quiet")
    assert status == 0, err


def test_changed_keys_lists_only_fixed_keys_that_differ():
    trained = {"train": {"steps": 2, "seed": 1, "lr": 0.1}, "coupler": {"name": "exact"},
               "eval": {"num_samples": 5}}  # fmt: skip
    now = {"train": {"steps": 9, "seed": 2, "lr": 0.2}, "coupler": {"name": "exact", "reg": 1},
           "eval": {"num_samples": 6}}  # fmt: skip
    assert changed_keys(trained, now) == ["coupler.reg", "train.seed"]
    assert all(k.startswith(("train.", "data.")) or "." not in k for k in CHANGEABLE)
