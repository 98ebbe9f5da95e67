"""Trackers as a plugin kind: what the run feeds them, their tables checked with the rest of
the config, and a failing tracker that the run survives."""

from __future__ import annotations

import logging

import pytest

from mfm_core.errors import ConfigError
from mfm_core.hookspecs import hookimpl
from mfm_core.runner.assembly.validate import validate_config
from mfm_core.testing import isolated_registry, train_briefly, write_tiny_config

ONE_SOLVER = "eval.solvers=[{ name = 'euler', steps = 2 }]"


class Recorder:
    """A tracker keeping what it receives; ``fail_on`` names a call that raises."""

    made: list[Recorder] = []

    def __init__(self, run_dir, start_step: int, fail_on: str = "") -> None:
        self.run_dir, self.start_step, self.fail_on = run_dir, start_step, fail_on
        self.scalars: dict[str, dict[int, float]] = {}
        self.images: list[tuple[int, str, tuple]] = []
        self.closed = 0
        Recorder.made.append(self)

    def log_scalars(self, step, values):
        if self.fail_on == "log_scalars":
            raise RuntimeError("the tracking server went away")
        for tag, value in values.items():
            assert type(value) is float, (tag, value)  # a host number, never a device tensor
            self.scalars.setdefault(tag, {})[step] = value

    def log_image(self, step, tag, image):
        self.images.append((step, tag, image.shape))

    def close(self):
        self.closed += 1


class RecorderPlugin:
    @hookimpl
    def register_trackers(self, register):
        register("recorder", Recorder)


@pytest.fixture
def registry():
    Recorder.made.clear()
    return isolated_registry(RecorderPlugin())


def test_the_run_feeds_its_trackers_host_numbers(tmp_path, registry):
    run = train_briefly(
        'train.trackers=[{ name = "recorder" }, { name = "recorder" }]',
        ONE_SOLVER,
        steps=3,
        directory=tmp_path,
        registry=registry,
    )
    first, second = Recorder.made
    assert first.scalars == second.scalars and first.run_dir == run.run_dir
    assert first.start_step == 0 and first.closed == second.closed == 1
    assert first.scalars["train/loss"] == pytest.approx(dict(enumerate(run.losses, start=1)))
    assert set(first.scalars["train/coupling_ms"]) == {3}
    assert first.scalars["eval/euler-2/w2"] == pytest.approx({3: run.metrics["samples"][0]["w2"]})
    assert {tag for _, tag, _ in first.images} >= {"pictures/samples", "pictures/loss"}
    assert all(len(shape) == 3 and shape[2] == 3 for _, _, shape in first.images)


def test_a_failing_tracker_warns_once_and_the_run_goes_on(tmp_path, registry, caplog):
    caplog.set_level(logging.WARNING)
    run = train_briefly(
        'train.trackers=[{ name = "recorder", fail_on = "log_scalars" }, { name = "recorder" }]',
        ONE_SOLVER,
        steps=3,
        directory=tmp_path,
        registry=registry,
    )
    warnings = [r.getMessage() for r in caplog.records if "tracker" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "tracker 'recorder' failed (RuntimeError: the tracking server went away)" in warnings[0]
    broken, working = Recorder.made
    assert broken.closed == 1 and broken.images == []
    assert set(working.scalars["train/loss"]) == {1, 2, 3}
    assert run.metrics["samples"][0]["w2"] > 0


def test_tracker_tables_are_checked_with_the_rest_of_the_config(tmp_path, registry):
    config = write_tiny_config(tmp_path)
    bad = [
        'train.trackers=[{ name = "recorder", fail_onn = "x" }, { name = "tensorbord" }, '
        '{ name = "recorder", run_dir = "elsewhere" }]',
        "coupler.name=exat",
    ]
    from mfm_core.registry import using_registry

    with using_registry(registry), pytest.raises(ConfigError) as caught:
        validate_config(config, bad, registry)
    message = str(caught.value)
    assert "$.train.trackers[0].fail_onn: unknown key; did you mean 'fail_on'" in message
    assert "$.train.trackers[1].name: unknown tracker 'tensorbord'; did you mean 'tensorboard'" in (
        message
    )
    assert "$.train.trackers[2].run_dir: set by mfm" in message
    assert "$.coupler.name: unknown coupler 'exat'" in message
