"""The paper's heuristic coupling: a cost-non-increasing local search over swaps."""

from __future__ import annotations

import torch

from mfm_core.couplers.base import PairCoupler, Scope
from mfm_core.schema import InvalidValue


def swap_gains(costs: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """``G[a, b]``: how much the total cost falls when noise a and b exchange partners.

    ``G[a, b] = C[a, p(a)] + C[b, p(b)] - C[a, p(b)] - C[b, p(a)]`` for the assignment
    ``p = partner``; symmetric, zero on the diagonal.
    """
    crossed = costs[:, partner]  # [a, b] = C[a, p(b)]
    own = crossed.diagonal()
    return (own[:, None] + own[None, :]) - (crossed + crossed.T)


def local_search(
    costs: torch.Tensor, max_sweeps: int | None = None, partner: torch.Tensor | None = None
) -> torch.Tensor:
    """A local optimum of the assignment under pairwise swaps, from a random permutation.

    Each sweep finds, for every noise sample a, the swap of partners with another noise
    sample b that lowers the total cost most, then applies a maximal set of these swaps that
    touch disjoint pairs, best gains first. Every swap lowers the cost of the two pairs it
    touches, so the total cost never rises. The search ends when no swap lowers the cost by
    more than rounding (then no improving swap is left) or after ``max_sweeps`` sweeps.
    Returns ``j[i]``, the partner of each row (``partner``, the start, is not modified).

    Cost: O(k^2) memory, two passes over a (k, k) matrix per sweep, and O(k) work per
    applied swap to keep that matrix current.
    """
    k = costs.shape[0]
    device = costs.device
    partner = torch.randperm(k, device=device) if partner is None else partner.clone()
    # Gains below a few ulps of the costs are rounding, not improvements.
    tolerance = 8 * torch.finfo(costs.dtype).eps * costs.abs().max()
    arange = torch.arange(k, device=device)
    costs_t = costs.T.contiguous()
    # crossing[a, b] = C[a, p(b)] + C[b, p(a)], the cost of the two pairs after swapping a and
    # b; symmetric bit for bit. Only the rows and columns of swapped samples change.
    crossing = costs[:, partner]
    crossing = crossing + crossing.T
    own = costs[arange, partner]
    scratch = torch.empty_like(crossing)
    sweeps = 0
    while max_sweeps is None or sweeps < max_sweeps:
        # G[a, b] = own[a] + own[b] - crossing[a, b]; own[a] is constant along row a.
        _, best_b = torch.sub(own[None, :], crossing, out=scratch).max(dim=1)
        gain = (own + own[best_b]) - crossing[arange, best_b]  # symmetric in (a, b)
        improving = gain > tolerance
        a, b = _disjoint(arange[improving], best_b[improving], gain[improving], k)
        if len(a) == 0:
            break
        ends, swapped = torch.cat([a, b]), torch.cat([b, a])
        partner[ends] = partner[swapped]
        own[ends] = costs[ends, partner[ends]]
        rows = costs[ends][:, partner] + costs_t[partner[ends]]
        crossing[ends] = rows
        crossing.scatter_(1, ends.expand(k, -1), rows.T)
        sweeps += 1
    return partner


def _disjoint(
    a: torch.Tensor, b: torch.Tensor, gain: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A maximal set of the candidate swaps ``(a, b)`` touching disjoint samples: repeatedly
    take every candidate that gains most at both of its ends (ties to the first), then drop
    the candidates touching a taken sample. A swap's gain depends only on its two pairs, so
    the gains of the remaining candidates stay exact."""
    device = a.device
    taken_a, taken_b = [], []
    used = torch.zeros(k, dtype=torch.bool, device=device)
    while len(a):
        ends = torch.cat([a, b])
        best_at = torch.full((k,), -torch.inf, dtype=gain.dtype, device=device)
        best_at.scatter_reduce_(0, ends, torch.cat([gain, gain]), reduce="amax")
        top = (gain == best_at[a]) & (gain == best_at[b])
        edge = torch.arange(len(a), device=device)
        first = torch.full((k,), len(a), dtype=torch.long, device=device)
        first.scatter_reduce_(
            0, torch.cat([a[top], b[top]]), torch.cat([edge[top], edge[top]]), reduce="amin"
        )
        take = top & (first[a] == edge) & (first[b] == edge)
        taken_a.append(a[take])
        taken_b.append(b[take])
        used[a[take]] = True
        used[b[take]] = True
        keep = ~used[a] & ~used[b]
        a, b, gain = a[keep], b[keep], gain[keep]
    if not taken_a:
        return a, b
    return torch.cat(taken_a), torch.cat(taken_b)


class HeuristicCoupler(PairCoupler):
    """The heuristic coupling: from a random permutation, swap partners between two pairs
    whenever that lowers their summed cost, until no such swap is left (a 2-opt local
    optimum) or ``max_sweeps`` sweeps have run.

    A permutation: ``i = arange(k)``. Cheaper than the exact assignment and never worse
    than its random start; each sweep costs O(k^2) tensor work on the samples' device.

    Args:
        max_sweeps: the most sweeps of pairwise swaps; unset, it runs until no swap lowers the cost.
    """

    def __init__(
        self,
        *,
        max_sweeps: int | None = None,
        cost: str = "sqeuclidean",
        within_class: bool = True,
        scope: Scope = "local",
    ) -> None:
        if max_sweeps is not None and max_sweeps < 0:
            raise InvalidValue("max_sweeps", f"must be zero or positive, got {max_sweeps}")
        super().__init__(cost=cost, within_class=within_class, scope=scope)
        self.max_sweeps = max_sweeps

    def pairs(
        self, costs: torch.Tensor | None, x0: torch.Tensor, x1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(len(costs), device=costs.device), local_search(costs, self.max_sweeps)
