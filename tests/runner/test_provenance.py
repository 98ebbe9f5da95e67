"""provenance.json and metrics.json say what produced a run, one record per session."""

from __future__ import annotations

import datetime
import json
import platform
import socket
import sys

import torch

from mfm_core.runner.run import resume_run
from mfm_core.runner.rundir.provenance import PROVENANCE_FILE, read_provenance
from mfm_core.testing import train_briefly

ONE_SOLVER = "eval.solvers=[{ name = 'euler', steps = 2 }]"


def test_each_session_records_versions_device_host_command_and_times(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["mfm-run", "tiny.toml", "train.steps=2"])
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    run = train_briefly(ONE_SOLVER, steps=2, directory=tmp_path)
    monkeypatch.setattr(sys, "argv", ["mfm-run", "--resume", str(run.run_dir)])
    resume_run(run.run_dir, ["train.steps=3"], progress=False)
    after = datetime.datetime.now(datetime.timezone.utc)

    first, second = read_provenance(run.run_dir)
    assert first["command"] == "mfm-run tiny.toml train.steps=2"
    assert second["command"] == f"mfm-run --resume {run.run_dir}"
    for record in (first, second):
        assert record["mfm"] == "0.1.0" and record["torch"] == torch.__version__
        assert record["python"] == platform.python_version()
        assert record["device"] == "cpu" and record["processes"] == 1
        assert record["host"] == socket.gethostname()
        started = datetime.datetime.fromisoformat(record["started"])
        finished = datetime.datetime.fromisoformat(record["finished"])
        assert before <= started <= finished <= after
    assert first["finished"] <= second["started"]
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["provenance"] == [first, second]
    assert json.loads((run.run_dir / PROVENANCE_FILE).read_text())["sessions"] == [first, second]
    # the first session's metrics.json, written before the resume, had its own session only
    assert run.metrics["provenance"] == [{**first}]
