"""The Frechet distance, feature statistics and their files, and the ``fid`` metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from mfm_core.config import load_config
from mfm_core.errors import ConfigError
from mfm_core.metrics import (
    FIDMetric,
    PixelFeatures,
    feature_statistics,
    frechet_distance,
    load_statistics,
)
from mfm_core.protocols import EvalContext, SolveResult
from mfm_core.registry import create
from mfm_core.runner.assembly.pipeline import build_pipeline
from mfm_core.runner.run import start_run


def random_covariance(rng: np.random.Generator, dim: int, rank: int | None = None) -> np.ndarray:
    factor = rng.standard_normal((dim, rank or dim))
    return factor @ factor.T / dim


def scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's formula with scipy's general matrix square root, as a reference."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return float(
        np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    )


def context(generated: torch.Tensor, reference: torch.Tensor) -> EvalContext:
    return EvalContext(
        generated=generated,
        reference=reference,
        noise=generated,
        field=lambda x, t: x,
        solve=SolveResult(x1=generated, nfe=1),
    )


def test_fid_of_a_set_with_itself_is_zero() -> None:
    features = torch.randn(300, 64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    mu, sigma = feature_statistics(features)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6 * np.trace(sigma))


def test_diagonal_covariances_match_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 4.0, 20), rng.uniform(0.0, 4.0, 20)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)


def test_non_commuting_covariances_match_scipy_sqrtm_and_are_symmetric() -> None:
    rng = np.random.default_rng(1)
    sigma1, sigma2 = random_covariance(rng, 30), random_covariance(rng, 30)
    assert not np.allclose(sigma1 @ sigma2, sigma2 @ sigma1)
    mu1, mu2 = rng.standard_normal(30), rng.standard_normal(30)
    expected = scipy_frechet(mu1, sigma1, mu2, sigma2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(expected, rel=1e-9)


def test_singular_covariances() -> None:
    # Rank one: S1 S2 = u (u.v) v^T has the one non-zero eigenvalue (u.v)^2.
    u, v = np.array([1.0, 2.0, 0.0, -1.0]), np.array([0.5, -1.0, 3.0, 2.0])
    mu = np.zeros(4)
    expected = u @ u + v @ v - 2 * abs(u @ v)
    got = frechet_distance(mu, np.outer(u, u), mu, np.outer(v, v))
    assert got == pytest.approx(expected, rel=1e-9)
    # Fewer samples than dimensions: rank-deficient sample covariances.
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(10, 50, generator=gen), torch.randn(12, 50, generator=gen) + 0.5
    stats_a, stats_b = feature_statistics(a), feature_statistics(b)
    assert np.linalg.matrix_rank(stats_a[1]) == 9
    value = frechet_distance(*stats_a, *stats_b)
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(frechet_distance(*stats_b, *stats_a), rel=1e-8)
    assert frechet_distance(*stats_a, *stats_a) == pytest.approx(0.0, abs=1e-8)


def test_samples_of_gaussians_approach_the_closed_form() -> None:
    gen = torch.Generator().manual_seed(3)
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([2.0, 1.0, 0.25])
    m = torch.tensor([1.0, 0.0, -1.0])
    x = torch.randn(20000, 3, generator=gen, dtype=torch.float64) * a.sqrt()
    y = torch.randn(20000, 3, generator=gen, dtype=torch.float64) * b.sqrt() + m
    expected = float(m @ m + (a + b - 2 * (a * b).sqrt()).sum())
    assert frechet_distance(*feature_statistics(x), *feature_statistics(y)) == pytest.approx(
        expected, abs=0.1
    )


def test_feature_statistics_are_float64_with_ddof_one() -> None:
    features = torch.randn(40, 5, generator=torch.Generator().manual_seed(4))
    mu, sigma = feature_statistics(features)
    assert mu.dtype == sigma.dtype == np.float64
    assert mu.shape == (5,) and sigma.shape == (5, 5)
    x = features.double().numpy()
    np.testing.assert_allclose(sigma, (x - x.mean(0)).T @ (x - x.mean(0)) / 39, rtol=1e-12)
    with pytest.raises(ValueError, match="n >= 2"):
        feature_statistics(torch.zeros(1, 5))


def test_mismatched_statistics_are_rejected() -> None:
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_statistics_round_trip_through_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    mu, sigma = rng.standard_normal(6), random_covariance(rng, 6)
    path = tmp_path / "stats.npz"
    np.savez(path, mu=mu, sigma=sigma)
    loaded = load_statistics(path)
    np.testing.assert_array_equal(loaded[0], mu)
    np.testing.assert_array_equal(loaded[1], sigma)
    with np.load(path) as data:  # pytorch-fid's keys
        assert sorted(data.files) == ["mu", "sigma"]


def test_bad_statistics_files_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.npz"
    with pytest.raises(ConfigError, match=rf"{missing} does not exist; expected an \.npz"):
        load_statistics(missing)
    no_sigma = tmp_path / "no_sigma.npz"
    np.savez(no_sigma, mu=np.zeros(3))
    with pytest.raises(ConfigError, match=rf"{no_sigma} hold the keys \['mu'\]"):
        load_statistics(no_sigma)
    bad_shape = tmp_path / "bad_shape.npz"
    np.savez(bad_shape, mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(ConfigError, match=rf"{bad_shape}: mu has shape \(3,\) and sigma \(4, 4\)"):
        load_statistics(bad_shape)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz file")
    with pytest.raises(ConfigError, match=f"cannot read FID statistics {garbage}"):
        load_statistics(garbage)


def test_fid_metric_through_the_registry(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(6)
    reference = torch.randn(200, 3, 4, 4, generator=gen)
    generated = torch.randn(150, 3, 4, 4, generator=gen) * 1.2
    metric = create("metric", "fid", features=PixelFeatures())
    assert metric(context(reference, reference)) == pytest.approx(0.0, abs=1e-6)
    computed = metric(context(generated, reference))
    assert computed > 0

    path = tmp_path / "reference.npz"
    mu, sigma = feature_statistics(reference.flatten(1))
    np.savez(path, mu=mu, sigma=sigma)
    from_file = create("metric", "fid", features=PixelFeatures(), reference_stats=str(path))
    assert from_file(context(generated, torch.zeros(0))) == pytest.approx(computed, rel=1e-9)

    limited = create("metric", "fid", features=PixelFeatures(), max_samples=50)
    expected = frechet_distance(
        *feature_statistics(generated[:50].flatten(1)),
        *feature_statistics(reference[:50].flatten(1)),
    )
    assert limited(context(generated, reference)) == pytest.approx(expected, rel=1e-9)


def test_reference_statistics_are_computed_once_per_evaluation() -> None:
    calls = []

    class Counting(PixelFeatures):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(len(x))
            return super().__call__(x)

    gen = torch.Generator().manual_seed(7)
    reference, generated = torch.randn(30, 4, generator=gen), torch.randn(20, 4, generator=gen)
    metric = FIDMetric(features=Counting())
    shared: dict = {}
    for _ in range(3):
        ctx = EvalContext(
            generated=generated,
            reference=reference,
            noise=generated,
            field=lambda x, t: x,
            solve=SolveResult(x1=generated, nfe=1),
            cache=shared,
        )
        metric(ctx)
    assert calls == [30, 20, 20, 20]
    assert all(key.startswith("fid.") for key in shared)


def test_reference_stats_are_checked_when_the_metric_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^\$\.metric\.reference_stats: .*nowhere\.npz does not"):
        create("metric", "fid", features=PixelFeatures(), reference_stats="nowhere.npz")
    path = tmp_path / "three.npz"
    np.savez(path, mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ConfigError, match=r"reference_stats: .* are 3-dimensional but the fea"):
        create("metric", "fid", features=PixelFeatures(shape=(2,)), reference_stats=str(path))


def test_features_must_be_a_feature_map() -> None:
    with pytest.raises(ConfigError, match=r"^\$\.metric\.features: expected a FeatureMap, got 3"):
        create("metric", "fid", features=3)


def test_default_features_need_the_inception_weights_at_build_time(monkeypatch) -> None:
    monkeypatch.delenv("MFM_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(ConfigError) as caught:
        create("metric", "fid")
    message = str(caught.value)
    assert message.startswith("$.metric.features.weights: ")
    assert "pt_inception-2015-12-05-6726825d.pth" in message
    assert "MFM_INCEPTION_WEIGHTS" in message and "features.weights" in message


def test_fid_in_a_run(tiny_config: Path, tmp_path: Path) -> None:
    text = tiny_config.read_text().replace(
        'metrics = ["w2"]', 'metrics = ["w2", { name = "fid", features = "pixels" }]'
    )
    tiny_config.write_text(text)
    pipeline = build_pipeline(load_config(tiny_config))
    assert isinstance(pipeline.metrics["fid"].features, PixelFeatures)
    run_dir = start_run(tiny_config, [], tmp_path / "runs", progress=False)
    rows = json.loads((run_dir / "metrics.json").read_text())["samples"]
    assert len(rows) == 3
    assert all(np.isfinite(row["fid"]) and row["fid"] >= 0 for row in rows)


def test_reference_statistics_are_cached_by_metric_not_by_address(monkeypatch) -> None:
    # Two FID metrics with different feature maps in one evaluation, the first freed: a cache
    # keyed on id(metric) would give the second the first's statistics whenever the address is
    # reused. The module's ``id`` returns one address for every object, so it always is.
    import gc

    import mfm_core.metrics.fid as fid

    monkeypatch.setattr(fid, "id", lambda obj: 1, raising=False)

    class Scaled(PixelFeatures):
        def __init__(self, scale: float) -> None:
            self.scale = scale

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return super().__call__(x) * self.scale

    gen = torch.Generator().manual_seed(3)
    reference, generated = torch.randn(40, 3, generator=gen), torch.randn(40, 3, generator=gen)
    ctx = context(generated, reference)
    first = FIDMetric(features=Scaled(1.0))
    first(ctx)
    del first
    gc.collect()
    # Features scaled by 2 scale both means and covariance square roots by 2: FID grows by 4.
    expected = scipy_frechet(
        *feature_statistics(generated.double()), *feature_statistics(reference.double())
    )
    assert FIDMetric(features=Scaled(2.0))(ctx) == pytest.approx(4 * expected, rel=1e-6)
