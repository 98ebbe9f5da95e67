"""Pairwise costs between noise and data samples, computed on flattened samples.

A cost is a function ``cost(a, b) -> C`` of two float matrices ``a``: (k0, d) and ``b``:
(k1, d) returning the (k0, k1) matrix ``C[i, j] = c(a[i], b[j])``. The built-in ones are
registered through the ``register_costs`` hook like any plugin's, so a coupler's ``cost``
parameter accepts every installed cost by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mfm_core.schema import InvalidValue

CostFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``cost(a, b) -> C``: (k0, d) and (k1, d) float matrices to the (k0, k1) cost matrix."""


def sqeuclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a - b|^2``."""
    # |a|^2 + |b|^2 - 2 <a, b> is one matrix product, but it cancels badly when the samples
    # sit far from the origin; centring both sets first keeps the norms small, and the clamp
    # removes the tiny negative values rounding still leaves.
    centre = (a.sum(dim=0) + b.sum(dim=0)) / (len(a) + len(b))
    a, b = a - centre, b - centre
    sq = torch.addmm(
        a.square().sum(dim=1)[:, None] + b.square().sum(dim=1)[None, :], a, b.T, alpha=-2.0
    )
    return sq.clamp_min_(0.0)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum |a - b|``."""
    return torch.cdist(a, b, p=1.0)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - <a, b> / (|a| |b|)``; a zero vector has cost 1 to everything."""
    return 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def resolve_cost(cost: str) -> CostFunction:
    """The cost function registered as ``cost``, looked up in the registry that is building
    the component (``mfm_core.registry.current_registry``); else ``InvalidValue`` (a
    ``ValueError``) listing the costs it holds. Components call this once, when built."""
    from mfm_core.registry import current_registry  # the registry imports the built-ins

    entries = current_registry().entries["cost"]
    entry = entries.get(cost)
    if entry is None:
        choices = ", ".join(repr(name) for name in sorted(entries))
        raise InvalidValue("cost", f"expected one of the installed costs {choices}, got {cost!r}")
    return entry.factory


def _flatten(x: torch.Tensor) -> torch.Tensor:
    # Half precision loses too much in the sums of a cost; float32 is enough for an assignment.
    dtype = torch.promote_types(x.dtype, torch.float32)
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).to(dtype)


def cost_matrix(
    x0: torch.Tensor, x1: torch.Tensor, cost: str | CostFunction = "sqeuclidean"
) -> torch.Tensor:
    """The cost ``C[i, j] = c(x0[i], x1[j])`` between flattened samples.

    ``x0``: (k0, ...), ``x1``: (k1, ...) with the same per-sample shape. Returns (k0, k1) on the
    inputs' device, in float32 (float64 for float64 inputs). ``cost`` is a cost function or the
    name of an installed one (looked up at each call; a coupler resolves its cost once with
    ``resolve_cost``): built in are ``"sqeuclidean"`` ``|a - b|^2``, ``"l1"`` ``sum |a - b|``
    and ``"cosine"`` ``1 - <a, b> / (|a| |b|)``.
    """
    function = resolve_cost(cost) if isinstance(cost, str) else cost
    if x0.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"x0 and x1 must have the same per-sample shape, got {tuple(x0.shape[1:])} "
            f"and {tuple(x1.shape[1:])}"
        )
    return function(_flatten(x0), _flatten(x1))
