"""The tensorboard tracker, read back with TensorBoard's own event reader."""

from __future__ import annotations

import json

import pytest

from mfm_core.runner.run import resume_run
from mfm_core.runner.rundir.layout import read_log
from mfm_core.testing import train_briefly

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TRACKED = [
    'train.trackers=[{ name = "tensorboard" }]',
    "eval.solvers=[{ name = 'euler', steps = 2 }]",
]


def events(run_dir):
    reader = event_accumulator.EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0}
    )
    reader.Reload()
    return reader


def scalars(reader, tag):
    """``{step: value}`` of one tag; a step written twice fails (a resume must not repeat)."""
    steps = [event.step for event in reader.Scalars(tag)]
    assert len(steps) == len(set(steps)), f"{tag}: steps written twice: {steps}"
    return {event.step: event.value for event in reader.Scalars(tag)}


def test_training_records_metrics_and_pictures_reach_tensorboard(tmp_path):
    run = train_briefly(*TRACKED, steps=4, directory=tmp_path)
    reader = events(run.run_dir)
    logged = read_log(run.run_dir)
    assert scalars(reader, "train/loss") == pytest.approx(
        {r["step"]: r["loss"] for r in logged}, rel=1e-6
    )
    assert scalars(reader, "train/lr") == pytest.approx({r["step"]: r["lr"] for r in logged})
    step_ms = scalars(reader, "train/step_ms")
    assert list(step_ms) == list(range(1, 5))
    # each step's time since the one before: together, the run's seconds in log.jsonl
    assert sum(step_ms.values()) / 1000 == pytest.approx(logged[-1]["time"], rel=1e-5)
    # read with the losses: at the checkpoint (step 4) and never in between
    assert list(scalars(reader, "train/coupling_ms")) == [4]
    row = run.metrics["samples"][0]
    assert scalars(reader, "eval/euler-2/w2") == pytest.approx({4: row["w2"]}, rel=1e-6)
    assert scalars(reader, "eval/euler-2/nfe") == {4: 2.0}
    assert scalars(reader, "eval/final_loss") == pytest.approx({4: run.metrics["final_loss"]})
    images = reader.Tags()["images"]
    assert {"pictures/samples", "pictures/loss", "pictures/trajectories"} <= set(images)
    (picture,) = reader.Images("pictures/samples")
    assert picture.step == 4 and picture.width > 100


def test_a_resumed_run_continues_the_same_event_log(tmp_path):
    run = train_briefly(*TRACKED, steps=2, directory=tmp_path)
    resume_run(run.run_dir, ["train.steps=4"], progress=False)
    reader = events(run.run_dir)
    assert list(scalars(reader, "train/loss")) == list(range(1, 5))
    assert list(scalars(reader, "eval/euler-2/w2")) == [2, 4]
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert scalars(reader, "eval/euler-2/w2")[4] == pytest.approx(
        metrics["samples"][0]["w2"], rel=1e-6
    )
