"""Metrics that score generated samples."""

from mfm_core.metrics.w2 import W2Metric, w2_distance

__all__ = ["W2Metric", "w2_distance"]
