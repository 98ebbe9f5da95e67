import math

import pytest
import torch

from mfm_core.errors import ConfigError
from mfm_core.paths import VPPath
from mfm_core.registry import create
from mfm_core.runner.run import start_run
from mfm_core.runner.rundir.layout import read_log


def _batch(batch: int = 5, shape: tuple[int, ...] = (3, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(batch, *shape, generator=gen, dtype=torch.float64),
        torch.randn(batch, *shape, generator=gen, dtype=torch.float64),
    )


def test_coefficients_preserve_the_variance() -> None:
    a, b, _, _ = VPPath().coefficients(torch.linspace(0, 1, 101, dtype=torch.float64))
    torch.testing.assert_close(a**2 + b**2, torch.ones(101, dtype=torch.float64))
    assert (a > 0).all() and (b > 0).all()


def test_end_points() -> None:
    x0, x1 = _batch()
    path = VPPath()
    ones = torch.ones(len(x0), dtype=x0.dtype)
    near_data = path.sample(x0, x1, ones)
    torch.testing.assert_close(near_data.t, ones - 1e-5)
    torch.testing.assert_close(near_data.x_t, x1, atol=5e-3, rtol=0)

    start = path.sample(x0, x1, torch.zeros_like(ones))
    a0 = math.exp(-(0.1 + (20.0 - 0.1) / 2) / 2)  # exp(-T(1) / 2) = exp(-5.025)
    assert a0 == pytest.approx(0.006571, abs=1e-6)
    torch.testing.assert_close(start.x_t, a0 * x1 + math.sqrt(1 - a0**2) * x0)
    torch.testing.assert_close(start.x_t, x0, atol=0.05, rtol=0)


@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_target_is_a_finite_difference_of_the_path(t: float) -> None:
    x0, x1 = _batch()
    path = VPPath()
    h = 1e-6

    def x_at(time: float) -> torch.Tensor:
        return path.sample(x0, x1, torch.full((len(x0),), time, dtype=x0.dtype)).x_t

    difference = (x_at(t + h) - x_at(t - h)) / (2 * h)
    u_t = path.sample(x0, x1, torch.full((len(x0),), t, dtype=x0.dtype)).u_t
    torch.testing.assert_close(u_t, difference, rtol=1e-5, atol=1e-5)


def test_parameters_change_the_schedule() -> None:
    a, _, _, _ = VPPath(beta_min=1.0, beta_max=1.0).coefficients(torch.tensor([0.0]))
    torch.testing.assert_close(a, torch.tensor([math.exp(-0.5)]))


def test_image_shapes_and_float32() -> None:
    x0, x1 = (x.float() for x in _batch(4, (3, 8, 8)))
    t = torch.rand(4)
    sample = VPPath().sample(x0, x1, t)
    assert sample.x_t.shape == sample.u_t.shape == (4, 3, 8, 8)
    assert sample.x_t.dtype == sample.u_t.dtype == torch.float32
    assert torch.isfinite(sample.u_t).all()
    with pytest.raises(ValueError, match="expected x0 and x1 of the same shape"):
        VPPath().sample(x0, x1[:3], t)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"beta_min": -0.1}, "beta_min"),
        ({"beta_min": float("nan")}, "beta_min"),
        ({"beta_max": 0.05}, "beta_max"),
        ({"beta_min": 0.0, "beta_max": 0.0}, "beta_max"),
        ({"eps": 0.0}, "eps"),
        ({"eps": 1.0}, "eps"),
    ],
)
def test_bad_parameters_name_their_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^\$\.path\.{key}: "):
        create("path", "vp", **params)


def test_a_run_trains_with_the_vp_path(tiny_config, tmp_path) -> None:
    overrides = [
        "path.name=vp",
        "train.steps=5",
        'eval.solvers=[{ name = "euler", steps = 2 }]',
        "eval.trajectories=0",
    ]
    run_dir = start_run(tiny_config, overrides, tmp_path / "runs", progress=False)
    assert 'name = "vp"' in (run_dir / "config.toml").read_text()
    losses = [record["loss"] for record in read_log(run_dir)]
    assert len(losses) == 5 and all(math.isfinite(loss) for loss in losses)
