"""Metrics that score generated samples and the learned flow, and the feature maps they use."""

from mfm_core.metrics.coupling import CouplingGap
from mfm_core.metrics.features import PixelFeatures
from mfm_core.metrics.fid import (
    FIDMetric,
    feature_statistics,
    frechet_distance,
    load_statistics,
)
from mfm_core.metrics.flow import Consistency, GradVariance, Straightness, TransportCost
from mfm_core.metrics.inception import InceptionFeatures
from mfm_core.metrics.likelihood import BPDMetric, NLLMetric, divergence, log_likelihood
from mfm_core.metrics.w2 import W2Metric, ot_cost, w2_distance

__all__ = [
    "BPDMetric",
    "NLLMetric",
    "divergence",
    "log_likelihood",
    "Consistency",
    "CouplingGap",
    "FIDMetric",
    "GradVariance",
    "InceptionFeatures",
    "PixelFeatures",
    "Straightness",
    "TransportCost",
    "W2Metric",
    "feature_statistics",
    "frechet_distance",
    "load_statistics",
    "ot_cost",
    "w2_distance",
]
