"""Pairwise costs between noise and data samples, computed on flattened samples."""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F

Cost = Literal["sqeuclidean", "l1", "cosine"]
COSTS: tuple[str, ...] = get_args(Cost)


def check_cost(cost: str) -> str:
    """Return ``cost`` if it names a known cost, else raise ``ValueError`` listing them."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    return cost


def _flatten(x: torch.Tensor) -> torch.Tensor:
    # Half precision loses too much in the sums below; float32 is enough for an assignment.
    dtype = torch.promote_types(x.dtype, torch.float32)
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).to(dtype)


def cost_matrix(x0: torch.Tensor, x1: torch.Tensor, cost: str = "sqeuclidean") -> torch.Tensor:
    """The cost ``C[i, j] = c(x0[i], x1[j])`` between flattened samples.

    ``x0``: (k0, ...), ``x1``: (k1, ...) with the same per-sample shape. Returns (k0, k1) on the
    inputs' device. Costs: ``"sqeuclidean"`` ``|a - b|^2``, ``"l1"`` ``sum |a - b|``,
    ``"cosine"`` ``1 - <a, b> / (|a| |b|)`` (a zero vector has cosine cost 1 to everything).
    """
    check_cost(cost)
    if x0.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"x0 and x1 must have the same per-sample shape, got {tuple(x0.shape[1:])} "
            f"and {tuple(x1.shape[1:])}"
        )
    a, b = _flatten(x0), _flatten(x1)
    if cost == "l1":
        return torch.cdist(a, b, p=1.0)
    if cost == "cosine":
        return 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    # |a|^2 + |b|^2 - 2 <a, b> is one matrix product, but it cancels badly when the samples
    # sit far from the origin; centring both sets first keeps the norms small, and the clamp
    # removes the tiny negative values rounding still leaves.
    centre = torch.cat([a, b]).mean(dim=0)
    a, b = a - centre, b - centre
    sq = a.square().sum(dim=1)[:, None] + b.square().sum(dim=1)[None, :] - 2.0 * (a @ b.T)
    return sq.clamp_min(0.0)
