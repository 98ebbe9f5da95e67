"""The Frechet distance between Gaussians fitted to features of generated and reference
samples (FID, with the ``inception`` feature map)."""

from __future__ import annotations

import os

import numpy as np
import torch

from mfm_core.errors import ConfigError
from mfm_core.metrics.inception import InceptionFeatures
from mfm_core.protocols import EvalContext, FeatureMap
from mfm_core.schema import InvalidValue

Statistics = tuple[np.ndarray, np.ndarray]
"""``(mu, sigma)``: the float64 mean (D,) and covariance (D, D) of a set of features."""


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix, by ``eigh``; the small negative
    eigenvalues that rounding leaves in a singular matrix are clamped to zero."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)``: the squared W2 distance between
    the Gaussians ``N(mu1, S1)`` and ``N(mu2, S2)``, in float64.

    ``tr sqrt(S1 S2)`` is computed as ``sum_i sqrt(lambda_i)`` over the eigenvalues of the
    symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)``, which has the eigenvalues of ``S1 S2``; both
    steps use ``eigh`` and clamp rounding-level negative eigenvalues to zero. Unlike
    ``scipy.linalg.sqrtm(S1 @ S2)`` (pytorch-fid's way) this needs no offset for singular
    covariances (fewer samples than dimensions) and never turns complex. The result is
    clamped at zero, which it can only undershoot by rounding.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    dim = mu1.shape[0]
    if {mu1.shape, mu2.shape} != {(dim,)} or {sigma1.shape, sigma2.shape} != {(dim, dim)}:
        raise ValueError(
            f"expected means of shape (D,) and covariances (D, D) for one D, got "
            f"{mu1.shape}, {sigma1.shape} and {mu2.shape}, {sigma2.shape}"
        )
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    return max(float(value), 0.0)


def feature_statistics(features: torch.Tensor | np.ndarray) -> Statistics:
    """The float64 mean (D,) and covariance (D, D) with ``ddof = 1`` (as pytorch-fid) of
    ``features`` (n, D), n >= 2."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"expected features of shape (n, D) with n >= 2, got {features.shape}")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def load_statistics(path: str | os.PathLike[str]) -> Statistics:
    """Read ``(mu, sigma)`` from an ``.npz`` file with keys ``mu`` (D,) and ``sigma`` (D, D),
    as written by ``mfm fid-stats`` or pytorch-fid; any problem is a ``ConfigError`` naming
    the file."""
    expected = "expected an .npz file with keys mu (D,) and sigma (D, D)"
    if not os.path.isfile(path):
        raise ConfigError(f"FID statistics file {path} does not exist; {expected}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in ("mu", "sigma") if key in data.files}
            keys = data.files
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise ConfigError(f"cannot read FID statistics {path} ({exc}); {expected}") from exc
    if len(arrays) < 2:
        raise ConfigError(f"FID statistics {path} hold the keys {keys}; {expected}")
    mu, sigma = (arrays[key].astype(np.float64) for key in ("mu", "sigma"))
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ConfigError(
            f"FID statistics {path}: mu has shape {mu.shape} and sigma {sigma.shape}; {expected}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ConfigError(f"FID statistics {path} hold values that are not finite")
    return mu, sigma


class FIDMetric:
    """FID: ``frechet_distance`` between the feature statistics of ``ctx.generated`` and of
    the reference.

    ``features``: the feature map (default: ``inception`` with its defaults, which needs the
    weights file). ``reference_stats``: an ``.npz`` of precomputed reference statistics (e.g.
    of a whole training set); unset, they are computed from ``ctx.reference`` once per
    evaluation and shared by every solver setting. ``max_samples``: at most this many
    generated and reference samples are used (FID is biased upwards at small sample sizes;
    published numbers use 50,000 samples).

    Args:
        features: the feature map the statistics are taken in, a feature_map name or table;
            unset, inception with its defaults.
        reference_stats: an .npz of precomputed reference statistics; unset, they are computed from
            the reference samples.
        max_samples: the most generated and reference samples used (published FIDs use 50000).
    """

    better = "lower"

    def __init__(
        self,
        *,
        features: FeatureMap | None = None,
        reference_stats: str | None = None,
        max_samples: int = 50000,
    ) -> None:
        if max_samples < 2:
            raise InvalidValue("max_samples", f"must be at least 2, got {max_samples!r}")
        if features is None:
            try:
                features = InceptionFeatures()
            except InvalidValue as exc:
                raise InvalidValue(f"features.{exc.name}", exc.message) from exc
        self.features = features
        self.max_samples = max_samples
        self.reference: Statistics | None = None
        if reference_stats is not None:
            try:
                self.reference = load_statistics(reference_stats)
            except ConfigError as exc:
                raise InvalidValue("reference_stats", str(exc)) from exc
            self._check_dim(self.reference, f"reference_stats {reference_stats}")

    def _check_dim(self, statistics: Statistics, what: str) -> None:
        dim = getattr(self.features, "dim", 0)
        if dim and len(statistics[0]) != dim:
            raise InvalidValue(
                "reference_stats",
                f"{what} are {len(statistics[0])}-dimensional but the feature map gives "
                f"{dim} features",
            )

    def statistics(self, samples: torch.Tensor) -> Statistics:
        """The feature statistics of the first ``max_samples`` of ``samples``."""
        return feature_statistics(self.features(samples[: self.max_samples]))

    def reference_statistics(self, ctx: EvalContext) -> Statistics:
        """From ``reference_stats`` when given, else from ``ctx.reference``, computed once per
        evaluation (cached in ``ctx.cache``)."""
        if self.reference is not None:
            return self.reference
        # Keyed by the metric object itself, which the cache holds: an ``id()`` can be reused
        # by another metric once this one is freed.
        cached = ctx.cache.setdefault("fid.reference_statistics", {})
        if self not in cached:
            cached[self] = self.statistics(ctx.reference)
        return cached[self]

    def __call__(self, ctx: EvalContext) -> float:
        reference = self.reference_statistics(ctx)
        generated = self.statistics(ctx.generated)
        if len(generated[0]) != len(reference[0]):
            raise ValueError(
                f"the generated samples have {len(generated[0])} features but the reference "
                f"statistics {len(reference[0])}"
            )
        return frechet_distance(*generated, *reference)
