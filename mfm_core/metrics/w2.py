"""The 2-Wasserstein distance between two equally sized samples, by exact OT."""

from __future__ import annotations

import math

import torch
from scipy.optimize import linear_sum_assignment

from mfm_core.couplers.costs import cost_matrix
from mfm_core.protocols import EvalContext


def w2_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """``W2 = sqrt(min_perm mean_i |a_i - b_perm(i)|^2)`` between the empirical measures
    (the square root of :func:`ot_cost`)."""
    return math.sqrt(ot_cost(a, b))


def ot_cost(a: torch.Tensor, b: torch.Tensor) -> float:
    """``min_perm mean_i |a_i - b_perm(i)|^2``: the squared-Euclidean OT cost between the
    empirical measures.

    ``a``, ``b``: (n, ...) with the same shape, flattened per sample. Exact: the optimal
    permutation of the float64 squared-Euclidean cost matrix on the CPU, O(n^3).
    """
    if a.shape != b.shape or a.dim() == 0 or len(a) == 0:
        raise ValueError(
            f"expected two non-empty samples of the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    costs = cost_matrix(
        a.detach().to("cpu", torch.float64), b.detach().to("cpu", torch.float64), "sqeuclidean"
    ).numpy()
    rows, cols = linear_sum_assignment(costs)
    return float(costs[rows, cols].mean())


NOISE_FLOOR_STREAM = 2
"""Offset of the seed of the second data draw from ``eval.seed`` (the evaluation's own draws
use ``eval.seed`` and ``eval.seed + 1``)."""


class W2Metric:
    """W2 between generated and reference samples (see ``w2_distance``).

    Uses the first ``min(n_generated, n_reference, max_samples)`` samples of each, since exact
    OT costs O(n^3) time and O(n^2) memory.

    Args:
        max_samples: the most generated and reference samples used, since exact OT costs O(n^3)
            time.
    """

    better = "lower"

    def __init__(self, *, max_samples: int = 4000) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be a positive integer, got {max_samples!r}")
        self.max_samples = max_samples

    def __call__(self, ctx: EvalContext) -> float:
        n = min(len(ctx.generated), len(ctx.reference), self.max_samples)
        return w2_distance(ctx.generated[:n], ctx.reference[:n])

    def noise_floor(self, ctx: EvalContext) -> float:
        """W2 between the reference and a second, independent draw of the data of the same
        size: what a perfect model would score at this sample size (exact OT on finite
        samples never reaches zero)."""
        n = min(len(ctx.generated), len(ctx.reference), self.max_samples)
        generator = torch.Generator().manual_seed(ctx.seed + NOISE_FLOOR_STREAM)
        return w2_distance(ctx.target.sample(n, generator), ctx.reference[:n])
