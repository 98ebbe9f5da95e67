"""Short experiments: the solver sweep can be skipped (``eval.solvers=[]``), each solver
setting's evaluation time and the total are printed and kept, and a long silent step (the
digits classifier's training) is announced."""

from __future__ import annotations

import logging
import math

import pytest

from mfm_core.runner.evaluation.report import terminal_summary
from mfm_core.testing import train_briefly


def test_no_eval_solvers_skips_the_sweep_and_keeps_the_final_loss(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run = train_briefly("eval.solvers=[]", steps=2, directory=tmp_path)
    assert run.metrics["samples"] == []
    assert math.isfinite(run.metrics["final_loss"])
    seconds = run.metrics["eval_seconds"]
    assert seconds["solvers"] == [] and 0 < seconds["final_loss"] <= seconds["total"]
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluation")]
    assert line.endswith("0 solver settings 0.0 s (eval.solvers = [])")
    summary = terminal_summary(run.metrics)
    assert "no solver settings evaluated (eval.solvers = [])" in summary
    assert "  solver  NFE" not in summary
    assert f"evaluation {seconds['total']:.1f} s (final loss {seconds['final_loss']:.1f} s)" in (
        summary
    )


def test_each_solver_settings_time_and_the_total_are_reported(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    solvers = "eval.solvers=[{ name = 'euler', steps = 1 }, { name = 'rk4', steps = 2 }]"
    run = train_briefly(solvers, steps=2, directory=tmp_path)
    seconds = run.metrics["eval_seconds"]
    assert len(seconds["solvers"]) == 2 and all(s > 0 for s in seconds["solvers"])
    assert seconds["total"] >= seconds["final_loss"] + sum(seconds["solvers"])
    rows = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval solver=")]
    for row, spent in zip(rows, seconds["solvers"], strict=True):
        assert row.endswith(f"({spent:.1f} s)")
    (total,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluation")]
    assert total.startswith(f"evaluation took {seconds['total']:.1f} s: final loss")
    assert f"2 solver settings {sum(seconds['solvers']):.1f} s" in total
    each = ", ".join(f"{s:.1f}" for s in seconds["solvers"])
    assert f"; per solver setting {each} s)" in terminal_summary(run.metrics)


def test_the_digits_classifier_is_announced_before_it_trains(caplog):
    pytest.importorskip("sklearn")
    from mfm_core.metrics.digits import DigitsMetric

    caplog.set_level(logging.INFO)
    DigitsMetric(epochs=1)._prepare()
    messages = [r.getMessage() for r in caplog.records]
    announced = messages.index(
        "training the digits classifier (1 epochs on the training split; once per evaluation) ..."
    )
    assert announced < next(i for i, m in enumerate(messages) if "held-out accuracy" in m)
