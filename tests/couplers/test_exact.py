import itertools

import numpy as np
import pytest
import torch

from mfm_core.couplers import ExactCoupler, cost_matrix


@pytest.mark.parametrize("cost", ["sqeuclidean", "l1", "cosine"])
@pytest.mark.parametrize("k", range(2, 8))
def test_exact_matches_brute_force(cost: str, k: int) -> None:
    coupler = ExactCoupler(cost=cost)
    for seed in range(3):
        gen = torch.Generator().manual_seed(100 * k + seed)
        x0 = torch.randn(k, 3, generator=gen)
        x1 = torch.randn(k, 3, generator=gen) + 1.0
        coupling = coupler(x0, x1)
        costs = cost_matrix(x0, x1, cost).double().numpy()
        perms = np.array(list(itertools.permutations(range(k))))
        totals = costs[np.arange(k), perms].sum(axis=1)
        # L1 optima are often not unique, so compare the optimal value, not the permutation.
        assert coupling.i.tolist() == list(range(k))
        assert sorted(coupling.j.tolist()) == list(range(k))
        assert costs[np.arange(k), coupling.j.numpy()].sum() == pytest.approx(totals.min())
        assert coupling.cost == pytest.approx(totals.min() / k, rel=1e-5)


def test_exact_is_a_permutation_on_non_flat_samples() -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, 2, 2, generator=gen)
    x1 = torch.randn(16, 3, 2, 2, generator=gen)
    coupling = ExactCoupler()(x0, x1)
    assert coupling.is_permutation
    assert sorted(coupling.i.tolist()) == list(range(16))
    assert sorted(coupling.j.tolist()) == list(range(16))


def test_exact_lowers_the_cost_of_the_drawn_pairing() -> None:
    gen = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(64, 2, generator=gen), torch.randn(64, 2, generator=gen)
    drawn = cost_matrix(x0, x1).diagonal().mean().item()
    assert ExactCoupler()(x0, x1).cost < drawn


def test_exact_returns_long_indices_on_the_input_device_without_grad() -> None:
    x0 = torch.randn(6, 2, requires_grad=True)
    x1 = torch.randn(6, 2, requires_grad=True)
    i, j = coupling = ExactCoupler()(x0, x1)
    for idx in (i, j):
        assert idx.dtype == torch.long
        assert idx.device == x0.device
        assert not idx.requires_grad
    assert type(coupling.cost) is float


@pytest.mark.parametrize(
    ("shape0", "shape1"), [((4, 2), (5, 2)), ((4, 2), (4, 3)), ((0, 2), (0, 2)), ((), ())]
)
def test_mismatched_batches_are_rejected(shape0: tuple, shape1: tuple) -> None:
    with pytest.raises(ValueError, match="x0 and x1"):
        ExactCoupler()(torch.zeros(shape0), torch.zeros(shape1))


def test_unknown_cost_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected one of the installed costs"):
        ExactCoupler(cost="euclidean")
