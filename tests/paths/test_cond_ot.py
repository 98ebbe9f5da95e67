import pytest
import torch
from torch.autograd.functional import jvp

from mfm_core.paths import CondOTPath


def _batch(batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(batch, 3, 2, generator=gen, dtype=torch.float64),
        torch.randn(batch, 3, 2, generator=gen, dtype=torch.float64),
    )


def test_end_points_without_sigma_min() -> None:
    x0, x1 = _batch()
    path = CondOTPath()
    torch.testing.assert_close(path.sample(x0, x1, torch.zeros(4, dtype=x0.dtype)).x_t, x0)
    torch.testing.assert_close(path.sample(x0, x1, torch.ones(4, dtype=x0.dtype)).x_t, x1)
    torch.testing.assert_close(path.sample(x0, x1, torch.rand(4, dtype=x0.dtype)).u_t, x1 - x0)


def test_sigma_min_keeps_a_fraction_of_the_noise_at_t_one() -> None:
    x0, x1 = _batch()
    sample = CondOTPath(sigma_min=0.1).sample(x0, x1, torch.ones(4, dtype=x0.dtype))
    torch.testing.assert_close(sample.x_t, x1 + 0.1 * x0)
    torch.testing.assert_close(sample.u_t, x1 - 0.9 * x0)


def test_mixed_times_broadcast_per_sample() -> None:
    x0, x1 = _batch(2)
    t = torch.tensor([0.0, 1.0], dtype=x0.dtype)
    sample = CondOTPath().sample(x0, x1, t)
    torch.testing.assert_close(sample.x_t, torch.stack([x0[0], x1[1]]))
    assert sample.t is t


@pytest.mark.parametrize("sigma_min", [0.0, 0.3])
def test_target_is_the_time_derivative_of_the_path(sigma_min: float) -> None:
    x0, x1 = _batch()
    path = CondOTPath(sigma_min=sigma_min)
    t = torch.rand(4, dtype=x0.dtype)
    _, dx_dt = jvp(lambda s: path.sample(x0, x1, s).x_t, (t,), (torch.ones_like(t),))
    torch.testing.assert_close(dx_dt, path.sample(x0, x1, t).u_t)


@pytest.mark.parametrize("sigma_min", [-0.1, 1.0, float("nan")])
def test_invalid_sigma_min_is_rejected(sigma_min: float) -> None:
    with pytest.raises(ValueError, match="sigma_min"):
        CondOTPath(sigma_min=sigma_min)


def test_wrong_time_shape_is_rejected() -> None:
    x0, x1 = _batch()
    with pytest.raises(ValueError, match=r"\(batch,\)"):
        CondOTPath().sample(x0, x1, torch.zeros(4, 1))
