import pytest
import torch

from mfm_core.datasets import (
    Checkerboard,
    Circles,
    EightGaussians,
    Gaussian,
    Moons,
    Spirals,
)

TOYS = [Gaussian(), EightGaussians(), Moons(), Checkerboard(), Circles(), Spirals()]


def _sample(dataset, n: int, seed: int) -> torch.Tensor:
    return dataset.sample(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dataset", TOYS, ids=lambda d: type(d).__name__)
def test_shape_dtype_and_determinism(dataset) -> None:
    x = _sample(dataset, 100, seed=0)
    assert dataset.shape == (2,)
    assert x.shape == (100, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    torch.testing.assert_close(x, _sample(dataset, 100, seed=0), rtol=0, atol=0)
    assert not torch.equal(x, _sample(dataset, 100, seed=1))


def test_samples_do_not_touch_the_global_generator() -> None:
    state = torch.get_rng_state()
    for dataset in TOYS:
        _sample(dataset, 10, seed=0)
    assert torch.equal(state, torch.get_rng_state())


def test_gaussian_any_shape_and_moments() -> None:
    dataset = Gaussian(shape=(3, 4), std=2.0)
    x = _sample(dataset, 20000, seed=0)
    assert dataset.shape == (3, 4) and x.shape == (20000, 3, 4)
    # Standard errors: mean 2 / sqrt(20000) = 0.014, std 2 / sqrt(40000) = 0.01 per entry.
    assert x.mean(dim=0).abs().max() < 0.06
    assert (x.std(dim=0) - 2.0).abs().max() < 0.05


def test_gaussian_log_prob_is_the_normal_density() -> None:
    dataset = Gaussian(shape=(2, 3), std=2.0)
    x = _sample(dataset, 5, seed=0)
    normal = torch.distributions.Normal(0.0, 2.0)
    torch.testing.assert_close(dataset.log_prob(x), normal.log_prob(x).sum(dim=(1, 2)))
    assert dataset.log_prob(x.double()).dtype == torch.float64
    with pytest.raises(ValueError, match=r"shape \(n, 2, 3\)"):
        dataset.log_prob(x.flatten(1))


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_checkerboard_samples_fall_on_the_on_squares(scale: float) -> None:
    x = _sample(Checkerboard(scale=scale), 4000, seed=0)
    assert x.abs().max() <= 4 * scale
    cells = torch.floor(x / (2 * scale)).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()
    assert len({tuple(c) for c in cells.tolist()}) == 8


def test_eight_gaussians_are_centred_on_the_circle() -> None:
    x = _sample(EightGaussians(radius=4.0, std=0.01), 1000, seed=0)
    torch.testing.assert_close(x.norm(dim=1), torch.full((1000,), 4.0), atol=0.05, rtol=0)
    angles = torch.atan2(x[:, 1], x[:, 0]) / (2 * torch.pi / 8)
    assert len(set(angles.round().remainder(8).long().tolist())) == 8


def test_noiseless_circles_lie_on_their_radii() -> None:
    radii = _sample(Circles(radius=3.0, factor=0.5, noise=0.0), 1000, seed=0).norm(dim=1)
    on_inner = (radii - 1.5).abs() < 1e-5
    assert (on_inner | ((radii - 3.0).abs() < 1e-5)).all()
    assert 0.4 < on_inner.float().mean() < 0.6


def test_noiseless_moons_fill_their_box() -> None:
    x = _sample(Moons(noise=0.0), 2000, seed=0)
    assert x[:, 0].min() >= -3 - 1e-5 and x[:, 0].max() <= 3 + 1e-5
    assert x[:, 1].min() >= -1.5 - 1e-5 and x[:, 1].max() <= 1.5 + 1e-5
    assert x.mean(dim=0).abs().max() < 0.1


def test_spirals_are_point_symmetric() -> None:
    x = _sample(Spirals(noise=0.0), 4000, seed=0)
    assert x.mean(dim=0).abs().max() < 0.1
    assert x.norm(dim=1).max() <= torch.pi + 1e-5


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: Gaussian(std=0.0), "std"),
        (lambda: Gaussian(shape=()), "shape"),
        (lambda: EightGaussians(radius=-1.0), "radius"),
        (lambda: Moons(noise=-0.1), "noise"),
        (lambda: Checkerboard(scale=0.0), "scale"),
        (lambda: Circles(factor=1.0), "factor"),
        (lambda: Spirals(turns=0.0), "turns"),
    ],
)
def test_invalid_parameters_name_themselves(factory, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        factory()
