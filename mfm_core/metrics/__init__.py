"""Metrics that score generated samples."""

from mfm_core.metrics.features import PixelFeatures
from mfm_core.metrics.fid import (
    FIDMetric,
    feature_statistics,
    frechet_distance,
    load_statistics,
    save_statistics,
)
from mfm_core.metrics.inception import InceptionFeatures
from mfm_core.metrics.w2 import W2Metric, w2_distance

__all__ = [
    "FIDMetric",
    "InceptionFeatures",
    "PixelFeatures",
    "W2Metric",
    "feature_statistics",
    "frechet_distance",
    "load_statistics",
    "save_statistics",
    "w2_distance",
]
