"""mfm_core.testing: check_coupler passes the built-ins and catches broken couplers; the
helpers and fixtures plugin authors use (isolated registry, tiny config, a short run)."""

import pytest
import torch

from mfm_core import create
from mfm_core.couplers.base import PairCoupler
from mfm_core.protocols import Coupling
from mfm_core.testing import check_coupler


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
        ("short", "same shape"),
        ("drops-labels", "dropped them"),
        ("out-of-range", "outside"),
    ],
)
def test_broken_couplings_bringing_samples_are_caught(mistake: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_coupler(_Substitute(mistake))
