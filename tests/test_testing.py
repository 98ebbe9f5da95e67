"""mfm_core.testing: check_coupler passes the built-ins and catches broken couplers; the
helpers and fixtures plugin authors use (isolated registry, tiny config, a short run)."""

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mfm_core import (
    Coupling,
    PairCoupler,
    PrepareContext,
    check_coupler,
    check_stateful_coupler,
    create,
)
from mfm_core.couplers import SemiDiscreteCoupler
from mfm_core.datasets.file import Points
from mfm_core.datasets.toy2d import Checkerboard, Gaussian
from mfm_core.testing import isolated_registry, train_briefly
from tests.couplers.helpers import LabelledPoints


@pytest.mark.parametrize("name", ["independent", "exact", "stable", "heuristic"])
def test_builtin_couplers_conform(name: str) -> None:
    check_coupler(create("coupler", name))


class _Broken(PairCoupler):
    def __init__(self, mistake: str) -> None:
        super().__init__(cost=None)
        self.mistake = mistake
        self.is_permutation = mistake != "claims-nothing"

    def pairs(self, costs, x0, x1):
        k = len(x0)
        i = torch.arange(k)
        if self.mistake == "duplicates":
            return i, torch.zeros(k, dtype=torch.long)
        if self.mistake == "out-of-range":
            return i, i + 1
        if self.mistake == "random-unseeded":
            return i, torch.from_numpy(__import__("numpy").random.permutation(k))
        if self.mistake == "ignores-classes":
            return i, torch.roll(i, 1)
        return i, i


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("duplicates", "declares a permutation .* uses an index twice"),
        ("out-of-range", "outside"),
        ("random-unseeded", "same torch.manual_seed"),
    ],
)
def test_broken_couplers_are_caught(mistake: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_coupler(_Broken(mistake))


def test_a_coupler_that_ignores_classes_is_caught() -> None:
    class CrossClass(_Broken):
        def __call__(self, x0, x1, cond=None):  # bypasses the base class's grouping
            k = len(x0)
            if x0.shape != x1.shape:
                raise ValueError("shapes")
            i = torch.arange(k)
            return Coupling(i=i, j=torch.roll(i, 1), is_permutation=True)

    with pytest.raises(AssertionError, match="crosses classes"):
        check_coupler(CrossClass("ignores-classes"))


def test_a_coupler_that_leaks_autograd_is_caught() -> None:
    class Leaky:
        within_class = False

        def __call__(self, x0, x1, cond=None):
            if x0.shape != x1.shape:
                raise ValueError("shapes")
            score = (x0.flatten(1) * x1.flatten(1)).sum(1)
            j = torch.argsort(score).long()
            (score.sum()).backward()  # gradients flow into the inputs
            return Coupling(i=torch.arange(len(x0)), j=j, is_permutation=True)

    with pytest.raises(AssertionError, match="gradients"):
        check_coupler(Leaky())


class _Substitute:
    """Pairs x0 with samples of its own (like reflow): ``Coupling.samples``."""

    def __init__(self, mistake: str = "") -> None:
        self.mistake = mistake

    def __call__(self, x0, x1, cond=None):
        if len(x0) != len(x1) or x0.shape != x1.shape:
            raise ValueError("shapes")
        x0 = x0.detach()
        made = x0 * 2 + 1
        if self.mistake == "leaks":
            made = made.requires_grad_()
        if self.mistake == "unseeded":
            made = made + torch.from_numpy(__import__("numpy").random.randn(*x0.shape)).float()
        if self.mistake == "short":
            made = made[:-1]
        keep = None if self.mistake == "drops-labels" else cond
        k = len(x0)
        i = torch.arange(k)
        if self.mistake == "out-of-range":
            x0, made = x0[:1], made[:1]
        return Coupling(i=i, j=i, is_permutation=True, samples=(x0, made, keep))


def test_a_coupler_bringing_its_samples_conforms() -> None:
    check_coupler(_Substitute())


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("leaks", "samples whose x1 requires grad"),
        ("unseeded", "same torch.manual_seed"),
        ("short", "indices outside"),  # samples may hold another count of x1 (semidiscrete)
        ("drops-labels", "dropped them"),
        ("out-of-range", "outside"),
    ],
)
def test_broken_couplings_bringing_samples_are_caught(mistake: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_coupler(_Substitute(mistake))


def test_the_pytest_plugin_is_declared_for_pytest_to_load() -> None:
    (point,) = importlib.metadata.entry_points(group="pytest11", name="mfm")
    assert point.value == "mfm_core.testing.pytest_plugin"
    assert point.dist is not None and point.dist.name == "mfm"


def test_a_plugin_test_file_needs_no_setup(tmp_path: Path) -> None:
    """A test file of a plugin's own, run by a fresh pytest: the fixtures come from mfm."""
    (tmp_path / "test_mine.py").write_text(
        textwrap.dedent(
            """
            import torch
            from mfm_core import hookimpl


            def flipped(x0, x1):
                return torch.arange(len(x0)), torch.arange(len(x0)).flip(0)


            class Mine:
                @hookimpl
                def register_couplers(self, register):
                    register("flipped", flipped)


            def test_registry(mfm_registry):
                registry = mfm_registry(Mine())
                assert "flipped" in registry.names("coupler")
                assert "exact" in registry.names("coupler")
                assert "sinkhorn" not in registry.names("coupler")  # nothing else installed
                j = registry.create("coupler", "flipped")(torch.randn(3, 2), torch.randn(3, 2)).j
                assert j.tolist() == [2, 1, 0]


            def test_tiny_config(mfm_tiny_config):
                assert 'name = "exact"' in mfm_tiny_config.read_text()
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_isolated_registry_holds_the_builtins_and_the_named_entry_point_only(
    monkeypatch, tmp_path: Path
) -> None:
    (tmp_path / "mfm_toy_plugin.py").write_text(
        "import torch\nfrom mfm_core import hookimpl\n\n"
        "@hookimpl\ndef register_couplers(register):\n"
        "    register('toy', lambda x0, x1: (torch.arange(len(x0)),) * 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    points = {
        "toy": importlib.metadata.EntryPoint("toy", "mfm_toy_plugin", "mfm.plugins"),
        "other": importlib.metadata.EntryPoint("other", "no_such_module_xyz", "mfm.plugins"),
    }

    def entry_points(*, group, name):
        assert group == "mfm.plugins"
        return [points[name]] if name in points else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    registry = isolated_registry("toy")
    assert registry.get("coupler", "exact").distribution == "mfm"
    assert registry.get("coupler", "toy").plugin == "toy"
    assert registry.broken == {}  # "other", installed but not asked for, is never loaded
    with pytest.raises(LookupError, match="no installed plugin named 'nowhere'"):
        isolated_registry("nowhere")


def test_train_briefly_trains_and_evaluates(tmp_path: Path) -> None:
    run = train_briefly("coupler.name=independent", steps=2, directory=tmp_path)
    assert len(run.losses) == 2 and all(loss > 0 for loss in run.losses)
    assert run.metrics["train"]["steps"] == 2
    assert 'name = "independent"' in (run.run_dir / "config.toml").read_text()


def test_mfm_train_fixture_runs_in_fresh_directories(mfm_train) -> None:
    first = mfm_train(steps=1)
    second = mfm_train("coupler.name=stable", steps=1)
    assert first.run_dir != second.run_dir and len(second.losses) == 1


# Stateful couplers: check_stateful_coupler, and check_coupler given a context.


def _context(points: int = 120, classes: int | None = None) -> PrepareContext:
    target = Points(Checkerboard().sample(points, torch.Generator().manual_seed(1)))
    if classes is not None:
        labels = torch.arange(points) % classes
        target = LabelledPoints(target.points + 4.0 * labels[:, None].float(), labels, classes)
    generator = torch.Generator().manual_seed(5)
    return PrepareContext(source=Gaussian(shape=(2,)), target=target, generator=generator)


def _semidiscrete() -> SemiDiscreteCoupler:
    return SemiDiscreteCoupler(iterations=30, batch=128, check_draws=256)


@pytest.mark.parametrize("classes", [None, 3])
def test_semidiscrete_keeps_the_stateful_promises(classes: int | None) -> None:
    check_stateful_coupler(_semidiscrete, _context(classes=classes))


def test_check_coupler_says_a_stateful_coupler_is_checked_prepared() -> None:
    with pytest.raises(AssertionError, match="StatefulCoupler: it couples only once prepared"):
        check_coupler(_semidiscrete())
    check_coupler(_semidiscrete(), context=_context())


class _Shuffler:
    """Stateful: a random pairing from its own generator, and a count of its couplings.
    ``mistake`` breaks one rule."""

    is_permutation = True

    def __init__(self, mistake: str = "") -> None:
        self.mistake = mistake

    def prepare(self, context: PrepareContext) -> None:
        self.generator = context.generator
        self.count = torch.zeros((), dtype=torch.long)

    def state_dict(self) -> dict:
        state = {"count": self.count if self.mistake == "live" else self.count.clone()}
        if self.mistake != "forgets-generator":
            state["generator"] = self.generator.get_state()
        if self.mistake == "unsafe":
            state["when"] = __import__("datetime").date(2026, 1, 1)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"].clone()
        if "generator" in state:
            self.generator.set_state(state["generator"])

    def __call__(self, x0, x1, cond=None):
        if x0.shape != x1.shape:
            raise ValueError("shapes")
        self.count += 1  # in place: a live tensor in a saved state would change with it
        j = torch.randperm(len(x0), generator=self.generator) if cond is None else None
        if j is None:  # within each class
            j = torch.arange(len(x0))
            for label in cond.unique():
                members = torch.nonzero(cond == label).flatten()
                j[members] = members[torch.randperm(len(members), generator=self.generator)]
        return torch.arange(len(x0)), j


def test_a_sound_stateful_coupler_passes() -> None:
    check_stateful_coupler(_Shuffler, _context())


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("live", r"check_stateful_coupler\(_Shuffler\): snapshot: .* changed"),
        ("forgets-generator", r"resume: .* couples batch 1 after it differently"),
        ("unsafe", r"weights_only: .*torch.load\(weights_only=True\).*Unpickl"),
    ],
)
def test_broken_stateful_couplers_are_caught(mistake: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_stateful_coupler(lambda: _Shuffler(mistake), _context())


def test_a_stateless_coupler_is_not_checked_as_a_stateful_one() -> None:
    with pytest.raises(AssertionError, match="is not a StatefulCoupler"):
        check_stateful_coupler(lambda: create("coupler", "exact"), _context())
