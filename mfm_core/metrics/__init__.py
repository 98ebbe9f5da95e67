"""Metrics that score generated samples."""

from mfm_core.metrics.likelihood import BPDMetric, NLLMetric, divergence, log_likelihood
from mfm_core.metrics.w2 import W2Metric, w2_distance

__all__ = ["BPDMetric", "NLLMetric", "W2Metric", "divergence", "log_likelihood", "w2_distance"]
