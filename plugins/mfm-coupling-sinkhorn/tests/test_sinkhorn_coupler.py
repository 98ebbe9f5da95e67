"""SinkhornCoupler: how pairs are drawn from the plan, in both sample modes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from mfm_core import Coupler, Coupling
from mfm_core.couplers import ExactCoupler
from scipy.optimize import linear_sum_assignment
from scipy.stats import chisquare

from mfm_coupling_sinkhorn import (
    SinkhornCoupler,
    draw_from_rows,
    draw_permutation,
    sinkhorn_plan,
)


def samples(k: int, d: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(k, d, generator=gen), torch.rand(k, d, generator=gen) * 4 - 2


def squared_costs(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x0.double(), x1.double()).square().float()


def test_plan_mode_keeps_every_noise_sample_once() -> None:
    x0, x1 = samples(64)
    coupler = SinkhornCoupler()
    assert isinstance(coupler, Coupler)
    coupling = coupler(x0, x1)
    assert isinstance(coupling, Coupling) and not coupling.is_permutation
    assert coupling.i.tolist() == list(range(64))
    assert coupling.i.dtype == coupling.j.dtype == torch.long
    assert 0 <= coupling.j.min() and coupling.j.max() < 64
    costs = squared_costs(x0, x1)
    assert coupling.cost == pytest.approx(costs[coupling.i, coupling.j].mean().item(), rel=1e-5)


def test_plan_mode_draws_each_row_from_the_plan() -> None:
    x0, x1 = samples(4, seed=3)
    coupler = SinkhornCoupler(reg=0.3, tol=1e-7)
    plan = sinkhorn_plan(squared_costs(x0, x1), 0.3, tol=1e-7).plan.double()
    torch.manual_seed(0)
    draws = torch.stack([coupler(x0, x1).j for _ in range(400)])  # (400, 4)
    for row in range(4):
        counts = torch.bincount(draws[:, row], minlength=4).double()
        expected = 400 * plan[row] / plan[row].sum()
        assert chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3, (counts, expected)


def test_draw_from_rows_matches_the_row_distributions() -> None:
    plan = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.0, 0.0, 1.0, 0.0], [1e-3, 0.0, 0.0, 0.999]])
    torch.manual_seed(1)
    draws = draw_from_rows(plan.repeat(20_000, 1)).view(20_000, 3)
    for row in range(3):
        counts = torch.bincount(draws[:, row], minlength=4).double()
        support = plan[row] > 0
        assert counts[~support].sum() == 0  # zero entries are never drawn
        expected = 20_000 * plan[row][support].double()
        if support.sum() == 1:
            assert counts[support].item() == 20_000
        else:
            assert chisquare(counts[support].numpy(), expected.numpy()).pvalue > 1e-3


def exact_permutation_law(plan: torch.Tensor) -> dict[tuple[int, ...], float]:
    """The law of ``draw_permutation``: rows in a uniformly random order, each drawing from
    its row of the plan restricted to the free columns."""
    k = len(plan)
    law = dict.fromkeys(itertools.permutations(range(k)), 0.0)
    for order in itertools.permutations(range(k)):
        for perm in law:
            p, free = 1.0 / math.factorial(k), set(range(k))
            for i in order:
                p *= plan[i, perm[i]].item() / sum(plan[i, c].item() for c in free)
                free.discard(perm[i])
            law[perm] += p
    return law


def test_draw_permutation_follows_the_sequential_law() -> None:
    plan = torch.tensor([[0.20, 0.10, 0.03], [0.05, 0.15, 0.13], [0.08, 0.08, 0.18]]).double()
    law = exact_permutation_law(plan)
    assert sum(law.values()) == pytest.approx(1.0)
    torch.manual_seed(2)
    n = 3000
    counts = dict.fromkeys(law, 0)
    for _ in range(n):
        counts[tuple(draw_permutation(plan).tolist())] += 1
    observed = [counts[p] for p in law]
    expected = [n * law[p] for p in law]
    assert chisquare(observed, expected).pvalue > 1e-3, (observed, expected)


def test_permutation_mode_uses_every_sample_once() -> None:
    x0, x1 = samples(100)
    coupling = SinkhornCoupler(sample="permutation")(x0, x1)
    assert coupling.is_permutation
    assert coupling.i.tolist() == list(range(100))
    assert sorted(coupling.j.tolist()) == list(range(100))


def test_permutation_mode_at_small_reg_is_the_exact_coupling() -> None:
    x0, x1 = samples(24, seed=5)
    costs = squared_costs(x0, x1).double().numpy()
    rows, cols = linear_sum_assignment(costs)
    coupling = SinkhornCoupler(reg=1e-3, sample="permutation", max_iter=20_000)(x0, x1)
    assert coupling.j.tolist() == cols.tolist()
    assert coupling.cost == pytest.approx(ExactCoupler()(x0, x1).cost, rel=1e-6)


@pytest.mark.parametrize("sample", ["plan", "permutation"])
def test_large_reg_pairs_like_the_independent_coupling(sample) -> None:
    # At reg 1e3 the plan is uniform: the partner of each noise sample is equally likely to
    # be any data sample. (Counts pooled over all rows would prove nothing in permutation
    # mode: every permutation uses each data sample once.) A coupler that ignores the plan
    # and keeps, say, the exact or the given pairing fails on the first row.
    x0, x1 = samples(8, seed=6)
    torch.manual_seed(3)
    coupler = SinkhornCoupler(reg=1e3, sample=sample)
    draws = torch.stack([coupler(x0, x1).j for _ in range(400)])
    for row in range(8):
        counts = torch.bincount(draws[:, row], minlength=8).double().numpy()
        assert chisquare(counts).pvalue > 1e-4, (row, counts)


def test_smaller_reg_gives_cheaper_pairs() -> None:
    x0, x1 = samples(256, seed=7)
    torch.manual_seed(4)
    drawn = squared_costs(x0, x1).diagonal().mean().item()
    exact = ExactCoupler()(x0, x1).cost
    costs = [SinkhornCoupler(reg=reg)(x0, x1).cost for reg in (1.0, 0.1, 0.01)]
    assert drawn > costs[0] > costs[1] > costs[2] > exact


@pytest.mark.parametrize("sample", ["plan", "permutation"])
def test_reproducible_under_manual_seed(sample) -> None:
    x0, x1 = samples(50)
    coupler = SinkhornCoupler(sample=sample, reg=0.5)
    torch.manual_seed(11)
    first = coupler(x0, x1).j
    torch.manual_seed(11)
    again = coupler(x0, x1).j
    other = coupler(x0, x1).j
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("sample", ["plan", "permutation"])
def test_within_class_pairs_never_cross_classes(sample) -> None:
    x0, x1 = samples(60, seed=8)
    labels = torch.arange(60) % 3
    coupling = SinkhornCoupler(sample=sample)(x0, x1, labels)
    assert sorted(coupling.i.tolist()) == list(range(60))
    assert torch.equal(labels[coupling.i], labels[coupling.j])
    if sample == "permutation":
        assert sorted(coupling.j.tolist()) == list(range(60))


@pytest.mark.parametrize("sample", ["plan", "permutation"])
def test_passes_the_coupler_conformance_checks(sample) -> None:
    testing = pytest.importorskip("mfm_core.testing")
    testing.check_coupler(SinkhornCoupler(sample=sample))


def test_no_gradient_flows_through_the_pairs() -> None:
    x0, x1 = (x.requires_grad_() for x in samples(16))
    i, j = SinkhornCoupler()(x0, x1)
    assert not i.requires_grad and not j.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reg": -1.0}, "reg: must be a positive number, got -1.0"),
        ({"max_iter": 0}, "max_iter: must be at least 1, got 0"),
        ({"tol": -1e-4}, "tol: must be positive, got -0.0001"),
        ({"sample": "greedy"}, "sample: must be 'plan' or 'permutation', got 'greedy'"),
        ({"scope": "world"}, "'local' or 'global', got 'world'"),
        ({"cost": None}, "cost: must name a cost"),
    ],
)
def test_bad_parameters_are_value_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        SinkhornCoupler(**kwargs)
