"""Feature maps for metrics that compare samples in a feature space (``fid``,
``consistency``); the Inception network of FID is in ``mfm_core.metrics.inception``."""

from __future__ import annotations

import math

import torch


class PixelFeatures:
    """The samples themselves, flattened: ``(n, ...) -> (n, prod(shape))`` float32 on the CPU.

    ``dim`` is known once the first batch has been seen (it is the sample size); ``shape``
    fixes it up front.

    Args:
        shape: the sample shape, which fixes the feature width up front; unset, it is learned from
            the first batch.
    """

    def __init__(self, *, shape: tuple[int, ...] | None = None) -> None:
        self.dim = math.prod(shape) if shape else 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        features = x.detach().flatten(1).float().cpu()
        self.dim = features.shape[1]
        return features
