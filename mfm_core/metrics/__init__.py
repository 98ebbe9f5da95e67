"""Metrics that score generated samples and the learned flow, and the feature maps they use."""

from mfm_core.metrics.features import PixelFeatures
from mfm_core.metrics.flow import Consistency, GradVariance, Straightness, TransportCost
from mfm_core.metrics.w2 import W2Metric, w2_distance

__all__ = [
    "Consistency",
    "GradVariance",
    "PixelFeatures",
    "Straightness",
    "TransportCost",
    "W2Metric",
    "w2_distance",
]
