"""sinkhorn_plan: marginals, the two limits of epsilon, stability, agreement with POT."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from mfm_coupling_sinkhorn import sinkhorn_plan


def costs_between(k0: int, k1: int, d: int = 2, seed: int = 0) -> torch.Tensor:
    """Squared distances between Gaussian noise and a shifted, squashed data cloud."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(k0, d, generator=gen)
    x1 = 0.5 * torch.rand(k1, d, generator=gen) * 4 - 1.0
    return torch.cdist(x0.double(), x1.double()).square().float()


def exact_cost(costs: torch.Tensor) -> float:
    rows, cols = linear_sum_assignment(costs.double().numpy())
    return float(costs.double().numpy()[rows, cols].mean())


def plan_cost(plan: torch.Tensor, costs: torch.Tensor) -> float:
    return float((plan.double() * costs.double()).sum())


def marginal_errors(plan: torch.Tensor) -> tuple[float, float]:
    k0, k1 = plan.shape
    plan = plan.double()
    rows = (plan.sum(dim=1) - 1 / k0).abs().sum().item()
    cols = (plan.sum(dim=0) - 1 / k1).abs().sum().item()
    return rows, cols


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (64, 64), (300, 300), (40, 70)])
@pytest.mark.parametrize("reg", [0.03, 0.1, 1.0])
def test_marginals_are_uniform_within_tol(shape, reg) -> None:
    costs = costs_between(*shape)
    result = sinkhorn_plan(costs, reg, tol=1e-5, max_iter=5000)
    rows, cols = marginal_errors(result.plan)
    assert result.converged and result.error < 1e-5
    assert rows + cols == pytest.approx(result.error, abs=1e-6)
    assert result.plan.shape == shape and result.plan.dtype == torch.float32
    assert torch.allclose(result.log_plan.exp(), result.plan, rtol=1e-5, atol=0)
    assert result.iterations <= 5000


def test_small_reg_approaches_the_exact_cost_without_nan() -> None:
    costs = costs_between(48, 48)
    exact = exact_cost(costs)
    result = sinkhorn_plan(costs, 1e-3, tol=1e-3, max_iter=20_000)
    assert torch.isfinite(result.log_plan).all() and torch.isfinite(result.plan).all()
    assert result.converged
    # The entropic cost is above the exact one by O(epsilon log k): here within 0.5 %.
    assert plan_cost(result.plan, costs) == pytest.approx(exact, rel=5e-3)
    # and far below the cost of the independent coupling
    assert exact < 0.3 * costs.mean().item()


@pytest.mark.parametrize("reg", [1e-4, 1e-3])
def test_tiny_reg_on_high_dimensional_costs_stays_finite(reg) -> None:
    # Costs near 4000 with a spread of a few hundred, epsilon = reg * 4000: C / epsilon
    # spreads over 1e3 to 1e4, so exp(-C / epsilon) underflows almost everywhere in float32.
    costs = costs_between(64, 64, d=3072, seed=1)
    result = sinkhorn_plan(costs, reg, tol=1e-3, max_iter=3000)
    assert torch.isfinite(result.plan).all() and result.converged
    assert plan_cost(result.plan, costs) == pytest.approx(exact_cost(costs), rel=1e-3)


def test_large_reg_gives_the_independent_plan() -> None:
    costs = costs_between(50, 50)
    result = sinkhorn_plan(costs, 1e3)
    uniform = torch.full_like(result.plan, 1 / 50**2)
    assert torch.allclose(result.plan, uniform, rtol=1e-2)
    assert plan_cost(result.plan, costs) == pytest.approx(costs.double().mean().item(), rel=1e-3)


def test_cost_of_the_plan_does_not_decrease_with_reg() -> None:
    costs = costs_between(60, 60).double()
    regs = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    plan_costs = [
        plan_cost(sinkhorn_plan(costs, reg, tol=1e-8, max_iter=20_000).plan, costs) for reg in regs
    ]
    assert all(b >= a for a, b in itertools.pairwise(plan_costs)), plan_costs
    assert exact_cost(costs) <= plan_costs[0] < plan_costs[-1] <= costs.mean().item()


def test_relative_reg_is_reg_times_the_mean_cost() -> None:
    costs = costs_between(30, 30)
    relative = sinkhorn_plan(costs, 0.1, tol=1e-6)
    epsilon = 0.1 * costs.mean().item()
    absolute = sinkhorn_plan(costs, epsilon, reg_mode="absolute", tol=1e-6)
    assert relative.epsilon == pytest.approx(epsilon, rel=1e-6)
    assert absolute.epsilon == pytest.approx(epsilon, rel=1e-6)
    assert torch.allclose(relative.plan, absolute.plan, atol=1e-7)
    # Relative reg does not depend on the scale of the costs; absolute reg does.
    scaled = sinkhorn_plan(100 * costs, 0.1, tol=1e-6)
    assert torch.allclose(scaled.plan, relative.plan, atol=1e-7)
    assert sinkhorn_plan(100 * costs, epsilon, reg_mode="absolute").epsilon == pytest.approx(
        epsilon, rel=1e-6
    )


def test_agrees_with_pot_at_moderate_reg() -> None:
    ot = pytest.importorskip("ot")
    costs = costs_between(80, 60).double()
    result = sinkhorn_plan(costs, 0.1, tol=1e-10, max_iter=10_000)
    weights0, weights1 = np.full(80, 1 / 80), np.full(60, 1 / 60)
    reference = ot.sinkhorn(
        weights0, weights1, costs.numpy(), result.epsilon, stopThr=1e-12, numItermax=100_000
    )
    assert np.abs(result.plan.numpy() - reference).sum() < 1e-7
    float32 = sinkhorn_plan(costs.float(), 0.1, tol=1e-5)
    assert np.abs(float32.plan.double().numpy() - reference).sum() < 1e-4


def test_stops_at_max_iter_and_says_so() -> None:
    costs = costs_between(64, 64)
    result = sinkhorn_plan(costs, 1e-3, max_iter=7)
    assert result.iterations == 7 and not result.converged and result.error >= 1e-4
    assert torch.isfinite(result.plan).all()
    # still an exact column marginal (the last update) whatever the rows
    assert marginal_errors(result.plan)[1] < 1e-5


def test_deterministic_and_on_the_dtype_of_the_costs() -> None:
    costs = costs_between(32, 32)
    first, second = sinkhorn_plan(costs), sinkhorn_plan(costs)
    assert torch.equal(first.plan, second.plan)
    assert sinkhorn_plan(costs.double()).plan.dtype == torch.float64
    assert sinkhorn_plan(costs.half()).plan.dtype == torch.float32


def test_equal_costs_give_the_uniform_plan() -> None:
    result = sinkhorn_plan(torch.zeros(5, 5), 0.05)
    assert torch.allclose(result.plan, torch.full((5, 5), 1 / 25))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reg": 0.0}, "reg: must be a positive number, got 0.0"),
        ({"reg": float("nan")}, "reg: must be a positive number"),
        ({"reg_mode": "scaled"}, "reg_mode: must be 'relative' or 'absolute'"),
        ({"max_iter": 0}, "max_iter: must be at least 1, got 0"),
        ({"tol": 0.0}, "tol: must be positive, got 0.0"),
        ({"check_every": 0}, "check_every: must be at least 1, got 0"),
    ],
)
def test_bad_parameters_are_value_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        sinkhorn_plan(torch.rand(3, 3), **kwargs)


def test_costs_must_be_a_matrix() -> None:
    with pytest.raises(ValueError, match=r"non-empty \(k0, k1\) matrix, got \(3,\)"):
        sinkhorn_plan(torch.rand(3))


def test_the_plan_is_an_ordinary_tensor_for_autograd() -> None:
    costs = costs_between(8, 8).requires_grad_()
    result = sinkhorn_plan(costs)
    assert not result.plan.requires_grad and not result.plan.is_inference()
    (result.plan * costs).sum().backward()  # the plan as a constant weight
    assert torch.equal(costs.grad, result.plan)


def test_epsilon_scaling_ends_at_the_requested_epsilon() -> None:
    # reg 0.01 is reached through epsilon 0.04 times the mean cost first.
    ot = pytest.importorskip("ot")
    costs = costs_between(40, 40).double()
    result = sinkhorn_plan(costs, 0.01, tol=1e-9, max_iter=20_000)
    weights = np.full(40, 1 / 40)
    reference = ot.sinkhorn(
        weights,
        weights,
        costs.numpy(),
        result.epsilon,
        method="sinkhorn_log",
        stopThr=1e-12,
        numItermax=20_000,
    )
    assert result.converged
    assert np.abs(result.plan.numpy() - reference).sum() < 1e-7


@pytest.mark.parametrize("max_iter", [1, 2, 5, 40])
def test_an_early_stop_still_reports_the_true_error(max_iter) -> None:
    costs = costs_between(50, 50)
    result = sinkhorn_plan(costs, 1e-3, max_iter=max_iter)
    rows, cols = marginal_errors(result.plan)
    assert result.iterations == max_iter and not result.converged
    assert torch.isfinite(result.plan).all()
    assert rows + cols == pytest.approx(result.error, rel=1e-3)


@pytest.mark.parametrize(
    ("reg", "shape", "budget"),
    [
        (1e-2, (64, 64), 500),
        (3e-3, (64, 64), 2000),
        (1e-3, (64, 64), 3700),
        (1e-3, (128, 96), 3700),
        (3e-4, (128, 96), 8700),
    ],
)
def test_small_reg_converges_within_pinned_iterations_without_pot(
    monkeypatch, reg, shape, budget
) -> None:
    """With POT absent (nothing to compare with), the plan itself is checked: its marginals,
    recomputed here, within ``tol`` and as reported; its epsilon; and the iterations within
    about 1.3 times those measured, so that a slower (but still converging) solver, e.g.
    without epsilon scaling or over-relaxation, is noticed."""
    monkeypatch.setitem(sys.modules, "ot", None)  # `import ot` fails, as without POT
    costs = costs_between(*shape, seed=2)
    result = sinkhorn_plan(costs, reg, tol=1e-4, max_iter=20_000)
    rows, cols = marginal_errors(result.plan)
    assert result.converged and rows + cols < 1e-4
    assert rows + cols == pytest.approx(result.error, rel=1e-2)
    assert result.iterations <= budget
    assert result.epsilon == pytest.approx(reg * costs.double().mean().item(), rel=1e-6)
