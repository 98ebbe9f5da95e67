"""The loss log: lines written at flush, with the losses of their own steps, and the first
non-finite step found without reading the device every step."""

from __future__ import annotations

import io
import json

import torch

from mfm_core.runner.training.distributed import Distributed
from mfm_core.runner.training.losslog import LossLog


def test_flush_writes_each_step_with_its_own_loss():
    log, out = LossLog(torch.device("cpu"), Distributed()), io.StringIO()
    for step, value in enumerate([3.0, 2.0, 1.5], start=1):
        loss = torch.tensor(value)
        log.watch(step, loss)
        log.add({"step": step, "loss": None}, loss)
    assert log.flush(out) is None
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 1.5}]
    assert log.last == {"step": 3, "loss": 1.5}
    assert log.flush(out) is None and out.getvalue().count("\n") == 3  # nothing pending


def test_the_first_non_finite_step_stops_the_lines_before_it():
    log, out = LossLog(torch.device("cpu"), Distributed()), io.StringIO()
    for step, value in enumerate([1.0, 0.5, float("nan"), float("inf"), 0.1], start=1):
        loss = torch.tensor(value)
        log.watch(step, loss)
        log.add({"step": step}, loss)
    assert log.flush(out) == 3
    assert [json.loads(line)["step"] for line in out.getvalue().splitlines()] == [1, 2]
    assert log.flush(None) == 3  # remembered


def test_steps_that_are_not_logged_are_still_watched():
    log = LossLog(torch.device("cpu"), Distributed())
    log.watch(7, torch.tensor(float("nan")))
    assert log.flush(None) == 7
