import math

import pytest
import torch

from mfm_core.solvers import (
    ButcherTableau,
    EulerSolver,
    FixedStepSolver,
    HeunSolver,
    MidpointSolver,
    RK4Solver,
)

# (solver class, stages, order)
SOLVERS = [(EulerSolver, 1, 1), (MidpointSolver, 2, 2), (HeunSolver, 2, 2), (RK4Solver, 4, 4)]
A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
X0 = torch.tensor([[1.0, 0.0], [0.3, -0.7]], dtype=torch.float64)


def linear_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x @ A.T


def linear_solution() -> torch.Tensor:
    return X0 @ torch.linalg.matrix_exp(A).T


def time_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dx/dt = 2 t x, solved by x(1) = x(0) e; wrong stage times c lower the order."""
    return 2.0 * t[:, None] * x


def time_solution() -> torch.Tensor:
    return X0 * math.e


def _error(solver: FixedStepSolver, field, solution) -> float:
    return (solver(field, X0).x1 - solution()).abs().max().item()


@pytest.mark.parametrize(("cls", "stages", "order"), SOLVERS)
def test_nfe_is_steps_times_stages(cls: type[FixedStepSolver], stages: int, order: int) -> None:
    calls = 0

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        assert t.shape == (len(x),) and t.dtype == x.dtype
        return -x

    result = cls(steps=5)(field, torch.ones(3, 2))
    assert result.nfe == calls == 5 * stages
    assert result.trajectory is None and result.times is None


@pytest.mark.parametrize(("cls", "stages", "order"), SOLVERS)
@pytest.mark.parametrize(
    ("field", "solution"), [(linear_field, linear_solution), (time_field, time_solution)]
)
def test_empirical_convergence_order(
    cls: type[FixedStepSolver], stages: int, order: int, field, solution
) -> None:
    coarse, fine = _error(cls(steps=16), field, solution), _error(cls(steps=32), field, solution)
    assert math.log2(coarse / fine) == pytest.approx(order, abs=0.2)


@pytest.mark.parametrize(("cls", "stages", "order"), SOLVERS)
def test_trajectory_shapes_and_end_points(
    cls: type[FixedStepSolver], stages: int, order: int
) -> None:
    x0 = torch.randn(3, 2, 2)
    result = cls(steps=4)(lambda x, t: -x, x0, return_trajectory=True)
    assert result.trajectory.shape == (5, 3, 2, 2)
    torch.testing.assert_close(result.times, torch.linspace(0, 1, 5))
    torch.testing.assert_close(result.trajectory[0], x0)
    torch.testing.assert_close(result.trajectory[-1], result.x1)


@pytest.mark.parametrize(
    ("cls", "times"),
    [
        (EulerSolver, [0.0, 0.5]),
        (MidpointSolver, [0.0, 0.25, 0.5, 0.75]),
        (HeunSolver, [0.0, 0.5, 0.5, 1.0]),
        (RK4Solver, [0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0]),
    ],
)
def test_stage_times_of_two_steps(cls: type[FixedStepSolver], times: list[float]) -> None:
    # Step n of h = 1/2 evaluates the field at n h + c h for each node c of the tableau:
    # Euler (c = 0), midpoint (0, 1/2), Heun (0, 1), RK4 (0, 1/2, 1/2, 1).
    seen: list[float] = []
    cls(steps=2)(lambda x, t: seen.append(t[0].item()) or x, torch.ones(1, 1))
    assert seen == times


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        # dx/dt = x + t over one step h = 1 from x0, by hand:
        # Euler: x0 + f(x0, 0) = 2 x0.
        (EulerSolver, lambda x0: 2 * x0),
        # Midpoint: k1 = x0, k2 = f(x0 + k1/2, 1/2) = 1.5 x0 + 0.5; x0 + k2.
        (MidpointSolver, lambda x0: 2.5 * x0 + 0.5),
        # Heun: k1 = x0, k2 = f(x0 + k1, 1) = 2 x0 + 1; x0 + (k1 + k2) / 2.
        (HeunSolver, lambda x0: 2.5 * x0 + 0.5),
        # RK4: k1 = x0, k2 = 1.5 x0 + 0.5, k3 = f(x0 + k2/2, 1/2) = 1.75 x0 + 0.75,
        # k4 = f(x0 + k3, 1) = 2.75 x0 + 1.75; x0 + (k1 + 2 k2 + 2 k3 + k4) / 6.
        (RK4Solver, lambda x0: x0 + (10.25 * x0 + 4.25) / 6),
    ],
)
def test_one_step_on_a_time_dependent_field_by_hand(cls: type[FixedStepSolver], expected) -> None:
    x0 = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
    x1 = cls(steps=1)(lambda x, t: x + t[:, None], x0).x1
    torch.testing.assert_close(x1, expected(x0), rtol=1e-12, atol=1e-12)


def test_stage_times_reach_exactly_one() -> None:
    seen: list[float] = []
    RK4Solver(steps=7)(lambda x, t: seen.append(t[0].item()) or x, torch.ones(1, 1))
    assert seen[0] == 0.0 and seen[-1] == 1.0


def test_gradients_flow_when_the_caller_enables_them() -> None:
    x0 = torch.ones(2, 2, requires_grad=True)
    EulerSolver(steps=3)(lambda x, t: -x, x0).x1.sum().backward()
    torch.testing.assert_close(x0.grad, torch.full((2, 2), (2 / 3) ** 3))


def test_describe() -> None:
    assert MidpointSolver(steps=4).describe() == {"solver": "midpoint", "steps": 4}


def test_invalid_steps_are_rejected() -> None:
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        HeunSolver(steps=0)


def test_inconsistent_tableau_is_rejected() -> None:
    with pytest.raises(ValueError, match="tableau"):
        ButcherTableau(a=((), (1.0,)), b=(1.0,), c=(0.0,))
