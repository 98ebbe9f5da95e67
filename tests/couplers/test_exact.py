import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from mfm_core.couplers import ExactCoupler, cost_matrix
from mfm_core.couplers import exact as exact_module
from mfm_core.couplers.exact import choose_backend, emd_assignment

BACKENDS = ["auto", "scipy", "emd"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cost", ["sqeuclidean", "l1", "cosine"])
@pytest.mark.parametrize("k", range(2, 8))
def test_exact_matches_brute_force(backend: str, cost: str, k: int) -> None:
    coupler = ExactCoupler(cost=cost, backend=backend)
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


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_finds_the_optimum_of_a_larger_low_dimensional_batch(backend: str) -> None:
    # k = 200 in 2-D: auto takes the network simplex here; all must reach scipy's optimum.
    gen = torch.Generator().manual_seed(5)
    x0, x1 = torch.randn(200, 2, generator=gen), torch.rand(200, 2, generator=gen) * 4 - 2
    costs = cost_matrix(x0, x1).double().numpy()
    optimum = costs[np.arange(200), linear_sum_assignment(costs)[1]].sum()
    coupling = ExactCoupler(backend=backend)(x0, x1)
    assert sorted(coupling.j.tolist()) == list(range(200))
    assert costs[coupling.i.numpy(), coupling.j.numpy()].sum() == pytest.approx(optimum, rel=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_and_duplicated_points_still_give_a_permutation(backend: str) -> None:
    # Four distinct points each repeated 40 times on both sides: every optimal plan ties
    # with many others, and the network simplex's plan is degenerate.
    gen = torch.Generator().manual_seed(2)
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x0 = points.repeat(40, 1)[torch.randperm(160, generator=gen)]
    x1 = (points + 0.5).repeat(40, 1)[torch.randperm(160, generator=gen)]
    coupling = ExactCoupler(backend=backend)(x0, x1)
    assert sorted(coupling.i.tolist()) == list(range(160))
    assert sorted(coupling.j.tolist()) == list(range(160))
    costs = cost_matrix(x0, x1).double().numpy()
    optimum = costs[np.arange(160), linear_sum_assignment(costs)[1]].sum()
    assert costs[coupling.i.numpy(), coupling.j.numpy()].sum() == pytest.approx(optimum)


def test_a_plan_that_is_not_a_permutation_is_repaired(monkeypatch) -> None:
    # A solver that stops early, or splits mass over tied costs, returns a plan that is not
    # a scaled permutation matrix: the assignment is then solved exactly by scipy.
    class SplitPlan:
        @staticmethod
        def emd(a, b, costs, numItermax, log):
            return np.full(costs.shape, 1.0 / costs.size), {"result_code": 1}

    monkeypatch.setattr(exact_module, "_import_pot", lambda: SplitPlan)
    costs = np.array([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0], [1.0, 2.0, 0.0]])
    assert emd_assignment(costs).tolist() == [0, 1, 2]


def test_auto_chooses_the_network_simplex_for_large_low_dimensional_batches() -> None:
    assert choose_backend(exact_module.EMD_MIN_K, 2) == "emd"
    assert choose_backend(4096, exact_module.EMD_MAX_DIM) == "emd"
    assert choose_backend(exact_module.EMD_MIN_K - 1, 2) == "scipy"
    assert choose_backend(4096, exact_module.EMD_MAX_DIM + 1) == "scipy"
    assert choose_backend(4096, 3072) == "scipy"


def test_auto_uses_scipy_without_pot(monkeypatch) -> None:
    monkeypatch.setattr(exact_module, "_import_pot", lambda: None)
    assert choose_backend(4096, 2) == "scipy"
    x0, x1 = torch.randn(256, 2), torch.randn(256, 2)
    assert sorted(ExactCoupler()(x0, x1).j.tolist()) == list(range(256))


def test_network_simplex_without_pot_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(exact_module, "_import_pot", lambda: None)
    for name in ("emd", "pot"):
        with pytest.raises(ValueError, match=r"backend: .*needs POT.*pip install 'mfm\[pot\]'"):
            ExactCoupler(backend=name)


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="backend: expected one of 'auto', 'scipy', 'emd'"):
        ExactCoupler(backend="hungarian")
