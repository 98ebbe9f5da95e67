"""BatchOT: the optimal permutation inside a minibatch."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from mfm_core.couplers.base import PairCoupler
from mfm_core.couplers.costs import Cost, check_cost


class ExactCoupler(PairCoupler):
    """The permutation ``j`` minimising ``sum_i C[i, j(i)]`` over the (k, k) cost matrix.

    Every x0 and every x1 is used exactly once: ``i = arange(k)``, ``j`` the assignment found
    by ``scipy.optimize.linear_sum_assignment`` (O(k^3)). The cost matrix is computed on the
    inputs' device and moved to the CPU once, as float64.
    """

    def __init__(self, *, cost: Cost = "sqeuclidean") -> None:
        self.cost = check_cost(cost)

    def _pairs(
        self, costs: torch.Tensor | None, x0: torch.Tensor, x1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = linear_sum_assignment(costs.to("cpu", torch.float64).numpy())
        return torch.from_numpy(rows), torch.from_numpy(cols)
