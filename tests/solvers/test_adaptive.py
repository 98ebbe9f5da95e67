import pytest
import torch

from mfm_core.solvers import Dopri5Solver

A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)


class CountingField:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        assert t.shape == (len(x),) and t.dtype == x.dtype
        return x @ A.T + t[:, None]


def _solution(x0: torch.Tensor) -> torch.Tensor:
    """Solution at t=1 of dx/dt = A x + t 1, by the augmented matrix exponential."""
    aug = torch.zeros(4, 4, dtype=torch.float64)
    aug[:2, :2], aug[:2, 2], aug[2, 3] = A, 1.0, 1.0  # state (x, t, 1)
    state = torch.cat([x0, torch.zeros(len(x0), 1), torch.ones(len(x0), 1)], dim=1)
    return (state @ torch.linalg.matrix_exp(aug).T)[:, :2]


def test_dopri5_meets_its_tolerance_and_counts_calls() -> None:
    x0 = torch.tensor([[1.0, 0.0], [0.3, -0.7]], dtype=torch.float64)
    field = CountingField()
    result = Dopri5Solver(atol=1e-9, rtol=1e-9)(field, x0)
    torch.testing.assert_close(result.x1, _solution(x0), atol=1e-7, rtol=0)
    assert result.nfe == field.calls > 0
    assert result.trajectory is None and result.times is None


def test_trajectory_points() -> None:
    x0 = torch.randn(3, 2, dtype=torch.float64)
    result = Dopri5Solver(trajectory_points=9)(CountingField(), x0, return_trajectory=True)
    assert result.trajectory.shape == (9, 3, 2)
    torch.testing.assert_close(result.times, torch.linspace(0, 1, 9, dtype=torch.float64))
    torch.testing.assert_close(result.trajectory[0], x0)
    torch.testing.assert_close(result.trajectory[-1], result.x1)


def test_describe() -> None:
    assert Dopri5Solver(atol=1e-4).describe() == {"solver": "dopri5", "atol": 1e-4, "rtol": 1e-5}


@pytest.mark.parametrize(
    ("params", "name"),
    [({"atol": 0.0}, "atol"), ({"rtol": -1.0}, "rtol"), ({"trajectory_points": 1}, "trajectory")],
)
def test_invalid_parameters_name_themselves(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Dopri5Solver(**params)
