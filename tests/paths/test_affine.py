"""AffinePath: a new path is a new schedule; the built-in paths are schedules."""

from __future__ import annotations

import pytest
import torch

from mfm_core.paths import AffinePath, CondOTPath, ScheduleValues, VPPath


class SquaredSchedule:
    """alpha_t = t^2, sigma_t = 1 - t^2: a path that is not a straight line in time."""

    t_max = 1.0

    def __call__(self, t: torch.Tensor) -> ScheduleValues:
        return ScheduleValues(alpha_t=t * t, sigma_t=1 - t * t, d_alpha_t=2 * t, d_sigma_t=-2 * t)


def _finite_difference(path: AffinePath, x0, x1, t, h=1e-6):
    plus = path.sample(x0, x1, t + h).x_t
    minus = path.sample(x0, x1, t - h).x_t
    return (plus - minus) / (2 * h)


def test_a_new_schedule_is_a_new_path() -> None:
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, 2, generator=generator, dtype=torch.float64)
    x1 = torch.randn(5, 3, 2, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    sample = AffinePath(SquaredSchedule()).sample(x0, x1, t)
    tb = t.reshape(-1, 1, 1)
    torch.testing.assert_close(sample.x_t, (1 - tb**2) * x0 + tb**2 * x1)
    torch.testing.assert_close(sample.u_t, 2 * tb * (x1 - x0))
    torch.testing.assert_close(
        sample.u_t, _finite_difference(AffinePath(SquaredSchedule()), x0, x1, t)
    )


@pytest.mark.parametrize("path", [CondOTPath(), CondOTPath(sigma_min=0.2), VPPath()])
def test_the_target_is_the_time_derivative_of_the_path(path) -> None:
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    x1 = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    t = torch.tensor([0.05, 0.4, 0.6, 0.95], dtype=torch.float64)
    torch.testing.assert_close(path.sample(x0, x1, t).u_t, _finite_difference(path, x0, x1, t))


def test_cond_ot_is_bit_identical_to_the_straight_line_formula() -> None:
    """The affine form computes exactly what the closed form does (runs must not change)."""
    generator = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(64, 2, generator=generator), torch.randn(64, 2, generator=generator)
    t = torch.rand(64, generator=generator)
    for sigma_min in (0.0, 0.1):
        shrink = 1.0 - sigma_min
        sample = CondOTPath(sigma_min=sigma_min).sample(x0, x1, t)
        tb = t[:, None]
        assert torch.equal(sample.x_t, (1.0 - shrink * tb) * x0 + tb * x1)
        assert torch.equal(sample.u_t, x1 - shrink * x0)


def test_time_is_clamped_to_the_schedule_t_max() -> None:
    path = VPPath(eps=0.01)
    x = torch.ones(2, 1)
    sample = path.sample(x, x, torch.tensor([0.5, 1.0]))
    assert sample.t.tolist() == pytest.approx([0.5, 0.99])
    assert torch.isfinite(sample.u_t).all()
