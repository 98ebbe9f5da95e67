"""BatchEOT: training pairs drawn from the Sinkhorn plan of a minibatch."""

from __future__ import annotations

from typing import Literal

import torch
from mfm_core import InvalidValue, PairCoupler

from mfm_coupling_sinkhorn.sinkhorn import RegMode, sinkhorn_param_problem, sinkhorn_plan

Sample = Literal["plan", "permutation"]


class SinkhornCoupler(PairCoupler):
    """Pairs drawn from the entropic OT plan of the (k, k) cost matrix (see ``sinkhorn_plan``).

    ``sample = "plan"``: ``i = arange(k)`` (every noise sample used once) and, independently
    for each row, ``j[i] ~ plan[i, :] / plan[i, :].sum()``. The data side is right only in
    expectation: in one batch some data samples appear twice and others not at all
    (``is_permutation = False``). ``sample = "permutation"``: a permutation drawn from the
    plan (see ``draw_permutation``), every sample used once (``is_permutation = True``).
    Randomness comes from the global torch generator of the device, so
    ``torch.manual_seed`` makes the pairs reproducible.

    ``reg`` is relative to the batch's mean cost (``reg_mode = "relative"``, the default) or
    in cost units (``"absolute"``); small ``reg`` approaches the exact coupling, large
    ``reg`` the independent one. ``max_iter``, ``tol`` and ``check_every`` control the
    Sinkhorn iterations. ``cost``, ``within_class`` and ``scope`` are those of every
    pairing coupler (``mfm_core.PairCoupler``).

    Args:
        reg: the entropic regularisation: small values approach the exact coupling, large ones the
            independent one.
        reg_mode: how reg is measured: "relative" to the batch's mean cost, or "absolute" in cost
            units.
        max_iter: the most Sinkhorn iterations per batch.
        tol: the marginal error below which the Sinkhorn iterations stop.
        check_every: how many Sinkhorn iterations run between two convergence checks.
        sample: how pairs are drawn from the plan: "plan" draws each noise sample's partner (data
            samples may repeat), "permutation" a permutation that uses every sample once.
    """

    def __init__(
        self,
        *,
        reg: float = 0.05,
        reg_mode: RegMode = "relative",
        max_iter: int = 1000,
        tol: float = 1e-4,
        check_every: int = 10,
        sample: Sample = "plan",
        cost: str = "sqeuclidean",
        within_class: bool = True,
        scope: Literal["local", "global"] = "local",
    ) -> None:
        if cost is None:
            raise InvalidValue("cost", "must name a cost: the plan is computed from the costs")
        super().__init__(cost=cost, within_class=within_class, scope=scope)
        problem = sinkhorn_param_problem(reg, reg_mode, max_iter, tol, check_every)
        if problem is not None:
            raise InvalidValue(*problem)
        if sample not in ("plan", "permutation"):
            raise InvalidValue("sample", f"must be 'plan' or 'permutation', got {sample!r}")
        self.reg = reg
        self.reg_mode = reg_mode
        self.max_iter = max_iter
        self.tol = tol
        self.check_every = check_every
        self.sample = sample
        self.is_permutation = sample == "permutation"

    def pairs(
        self, costs: torch.Tensor | None, x0: torch.Tensor, x1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        result = sinkhorn_plan(
            costs,
            self.reg,
            reg_mode=self.reg_mode,
            max_iter=self.max_iter,
            tol=self.tol,
            check_every=self.check_every,
        )
        if self.sample == "permutation":
            j = draw_permutation(result.plan)
        else:
            j = draw_from_rows(result.plan)
        return torch.arange(len(costs), device=costs.device), j


def draw_from_rows(plan: torch.Tensor) -> torch.Tensor:
    """``j[i] ~ plan[i, :] / plan[i, :].sum()``, independently for every row of ``plan``.

    ``plan``: (k0, k1) with non-negative entries and positive row sums. Inverse-CDF sampling
    (one cumulative sum and a binary search per row): the distribution of
    ``torch.multinomial(plan, 1)``, eight times faster on a (4096, 4096) plan.
    """
    cdf = plan.cumsum(dim=1)
    return _search(cdf, torch.rand(len(plan), 1, dtype=cdf.dtype, device=cdf.device)).squeeze(1)


def _search(cdf: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The index drawn by ``uniform`` in [0, 1) from the cumulative weights ``cdf`` (last dim).

    The target ``(1 - uniform) * total`` lies in (0, total], and the first index whose
    cumulative weight reaches it always has a positive weight of its own: zero-weight entries
    are never drawn, even with rounding.
    """
    target = (1.0 - uniform) * cdf[..., -1:]
    return torch.searchsorted(cdf, target)


def draw_permutation(plan: torch.Tensor) -> torch.Tensor:
    """A permutation ``j`` (row ``i`` pairs with column ``j[i]``) drawn from a (k, k) plan.

    The rows are visited in a random order; each draws its column from its row of the plan
    restricted to the columns not taken yet. So every row and column is used once, a plan
    concentrated on a permutation (small ``reg``) gives that permutation, and a uniform plan
    (large ``reg``) gives a uniformly random permutation. This is not the distribution
    proportional to ``prod_i plan[i, j[i]]`` (sampling that is #P-hard), but it is exact per
    step and cheap: k sequential steps of O(k) work, about 0.4 s for k = 4096 on a CPU core.
    It stays on the device with one host synchronisation (reading the row order).
    """
    k = len(plan)
    j = torch.empty(k, dtype=torch.long, device=plan.device)  # an ordinary tensor, see below
    # Inference mode cuts the per-operation overhead of the k small steps by a third.
    with torch.inference_mode():
        free = torch.ones(k, dtype=plan.dtype, device=plan.device)
        uniforms = torch.rand(k, 1, dtype=plan.dtype, device=plan.device)
        for step, i in enumerate(torch.randperm(k, device=plan.device).tolist()):
            choice = _search(torch.cumsum(plan[i] * free, dim=0), uniforms[step])
            j[i : i + 1] = choice
            free.index_fill_(0, choice, 0.0)
    return j
