"""The shared steps of every pairing coupler: checks, no-grad, cost matrix, result."""

from __future__ import annotations

import abc

import torch

from mfm_core.couplers.costs import cost_matrix
from mfm_core.protocols import Coupling


class PairCoupler(abc.ABC):
    """Base of couplers that choose index pairs ``(i, j)`` inside one minibatch.

    ``__call__(x0, x1, cond)`` takes ``x0`` and ``x1`` of shape (k, ...) with the same
    per-sample shape, computes the (k, k) cost matrix when ``cost`` names a cost (see
    ``mfm_core.couplers.costs``), and asks ``_pairs`` for the indices. ``cond`` (per-sample
    labels) is accepted for the ``Coupler`` protocol but ignored: every sample may pair with
    every other, whatever its class.

    Subclasses set ``cost`` (a cost name, or ``None`` to skip the cost matrix) and
    ``is_permutation`` (true when every sample is used exactly once), and implement ``_pairs``.
    """

    cost: str | None = None
    is_permutation: bool = True

    @torch.no_grad()
    def __call__(
        self, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None = None
    ) -> Coupling:
        if x0.dim() == 0 or x1.dim() == 0 or len(x0) != len(x1) or len(x0) == 0:
            raise ValueError(
                "x0 and x1 must hold the same positive number of samples, got shapes "
                f"{tuple(x0.shape)} and {tuple(x1.shape)}"
            )
        if x0.shape[1:] != x1.shape[1:]:
            raise ValueError(
                "x0 and x1 must have the same per-sample shape, got shapes "
                f"{tuple(x0.shape)} and {tuple(x1.shape)}"
            )
        costs = None if self.cost is None else cost_matrix(x0, x1, self.cost)
        i, j = (idx.to(device=x0.device, dtype=torch.long) for idx in self._pairs(costs, x0, x1))
        mean_cost = None if costs is None else costs[i, j].mean().item()
        return Coupling(i=i, j=j, cost=mean_cost, is_permutation=self.is_permutation)

    @abc.abstractmethod
    def _pairs(
        self, costs: torch.Tensor | None, x0: torch.Tensor, x1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return index tensors ``(i, j)`` of equal length; ``costs`` is (k, k) or ``None``."""
