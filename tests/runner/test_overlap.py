"""Coupling the next batch in a background thread (train.overlap_coupling): when it is on, and
that a coupler failing in the thread fails the run with its own message (the same run with and
without the thread, and its exact resume, are in test_image_run.py)."""

from __future__ import annotations

import types

import pytest
import torch

from mfm_core import hookimpl
from mfm_core.errors import ConfigError, PluginError
from mfm_core.runner.run import start_run
from mfm_core.runner.rundir.checkpoint import load_checkpoint
from mfm_core.runner.training.feed import overlaps_coupling


class Coupler:
    def __init__(self, scope: str = "local", draws: bool | None = None) -> None:
        self.scope = scope
        if draws is not None:
            self.draws_global_rng = draws


@pytest.mark.parametrize(
    ("setting", "coupler", "distributed", "expected"),
    [
        ("off", Coupler(draws=False), False, False),
        ("auto", Coupler(draws=False), False, True),
        ("auto", Coupler(draws=False), True, True),  # local scope under torchrun
        ("auto", Coupler(), False, False),  # says nothing: may draw global random numbers
        ("auto", Coupler(draws=True), False, False),
        ("auto", Coupler("global", draws=False), True, False),
        ("auto", Coupler("global", draws=False), False, True),  # global is local alone
        ("on", Coupler(draws=True), False, True),
        ("on", Coupler(), True, True),
    ],
)
def test_when_the_coupling_overlaps_the_step(setting, coupler, distributed, expected):
    assert overlaps_coupling(setting, coupler, distributed) is expected


def test_on_with_a_global_coupler_under_torchrun_is_a_config_error():
    with pytest.raises(ConfigError, match=r"overlap_coupling.*scope 'global'.*'auto' or 'off'"):
        overlaps_coupling("on", Coupler("global", draws=False), True)


def test_builtin_couplers_say_whether_they_draw_global_random_numbers():
    from mfm_core.registry import create

    for name in ("exact", "independent"):
        assert create("coupler", name).draws_global_rng is False, name
    for name in ("heuristic", "stable", "sinkhorn"):
        assert create("coupler", name).draws_global_rng is True, name


class FailsOnThirdCall:
    """Pairs in order, but returns an index out of range at its third call."""

    draws_global_rng = False

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x0, x1):
        self.calls += 1
        k = len(x0)
        j = torch.arange(k)
        if self.calls == 3:
            j[0] = k + 7
        return torch.arange(k), j


def test_a_coupler_failing_in_the_background_fails_the_run_with_its_message(
    tiny_plugin, image_config, tmp_path
):
    plugin = types.ModuleType("failing")

    @hookimpl
    def register_couplers(register):
        register("fails-third", FailsOnThirdCall)

    plugin.register_couplers = register_couplers
    tiny_plugin.add_plugin(plugin, "failing")
    saved = {}
    for overlap in ("on", "off"):
        overrides = [
            "coupler.name=fails-third",
            "train.steps=6",
            "train.checkpoint_every=1",
            f"train.overlap_coupling={overlap!r}",
        ]
        with pytest.raises(PluginError, match=r"fails-third.*indices outside") as caught:
            start_run(image_config, overrides, tmp_path / overlap, progress=False)
        assert "this is a bug in the plugin" in str(caught.value)
        run_dir = tmp_path / overlap / "00000-tinyimg"
        assert not (run_dir / "metrics.json").exists()
        # Steps 1 and 2 trained on the first two couplings and were saved; the third never
        # came. In the background it failed during step 2, whose checkpoint is saved as
        # without the thread: with the state from before the failed batch, so that a resume
        # draws that batch again.
        names = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.pt"))
        assert names == ["step-00000001.pt", "step-00000002.pt"], overlap
        saved[overlap] = load_checkpoint(run_dir / "checkpoints" / names[-1])["ranks"][0]
    assert saved["on"]["next_pairs"] is None
    for key in ("generator", "step_generator", "torch_rng"):
        assert torch.equal(saved["on"][key], saved["off"][key]), key
