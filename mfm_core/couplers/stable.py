"""Stable matching: Gale-Shapley on cost rankings, vectorised in torch."""

from __future__ import annotations

import torch

from mfm_core.couplers.base import PairCoupler, Scope
from mfm_core.schema import InvalidValue


def gale_shapley(costs: torch.Tensor, max_rounds: int | None = None) -> torch.Tensor:
    """The noise-proposing stable matching of a (k, k) cost matrix: ``j[i]`` for each row.

    Noise ``i`` ranks data by ``costs[i, :]`` and data ``j`` ranks noise by ``costs[:, j]``
    (lower is better, ties broken by index). Each round, every unmatched noise sample
    proposes to the best data sample it has not yet proposed to; each data sample keeps the
    best of its proposers and its current partner. Run to the end, no pair ``(i, j)`` prefers
    each other to their partners. After ``max_rounds`` rounds the noise still unmatched is
    paired with the still free data in random order (the random start: ``max_rounds = 0`` is
    a uniformly random permutation). All work is tensor operations on the device of
    ``costs``; the only host synchronisation is one check per round.
    """
    k = costs.shape[0]
    device = costs.device
    # Ranked proposal lists; ties in cost keep index order (stable sort).
    preferences = torch.argsort(costs, dim=1, stable=True)
    arange = torch.arange(k, device=device)
    # Data j's ranking of noise i as an integer key, so comparisons break ties by index.
    order_by_data = torch.argsort(costs.T.contiguous(), dim=1, stable=True)  # rows: data
    rank_by_data = torch.empty_like(order_by_data)
    rank_by_data.scatter_(1, order_by_data, arange[None, :].expand(k, k))
    rank_by_data = rank_by_data.T  # [i, j]: the place of noise i in data j's ranking

    partner_of_data = torch.full((k,), -1, dtype=torch.long, device=device)
    # The rank of each data sample's current partner in its list (k: no partner yet).
    held_rank = torch.full((k,), k, dtype=torch.long, device=device)
    next_choice = torch.zeros(k, dtype=torch.long, device=device)
    proposers = arange
    rounds = 0
    while len(proposers) and (max_rounds is None or rounds < max_rounds):
        targets = preferences[proposers, next_choice[proposers]]
        next_choice[proposers] += 1
        ranks = rank_by_data[proposers, targets]
        # Each data sample keeps the best of its current partner and this round's proposers.
        best = held_rank.scatter_reduce(0, targets, ranks, reduce="amin")
        accepted = ranks == best[targets]
        won = targets[accepted]
        dumped = partner_of_data[won]
        partner_of_data[won] = proposers[accepted]
        held_rank = best
        # Next round: the rejected proposers and the partners their data samples dropped.
        proposers = torch.cat([proposers[~accepted], dumped[dumped >= 0]])
        rounds += 1

    partner = torch.full((k,), -1, dtype=torch.long, device=device)
    matched = partner_of_data >= 0
    partner[partner_of_data[matched]] = arange[matched]
    unmatched = (partner < 0).nonzero().squeeze(1)
    if len(unmatched):
        free_data = (~matched).nonzero().squeeze(1)
        shuffle = torch.randperm(len(free_data), device=device)
        partner[unmatched] = free_data[shuffle]
    return partner


class StableCoupler(PairCoupler):
    """Gale-Shapley stable matching between noise and data, each ranking the other by cost.

    A permutation: ``i = arange(k)``, ``j = gale_shapley(C)``. ``max_rounds`` stops early
    (``None``: run until every sample is matched, which leaves no blocking pair); samples
    still free then are paired at random. O(k^2 log k) for the rankings plus one vectorised
    round of proposals per step.

    Args:
        max_rounds: the most proposal rounds before the samples still free are paired at random;
            unset, it runs until every sample is matched.
    """

    def __init__(
        self,
        *,
        max_rounds: int | None = None,
        cost: str = "sqeuclidean",
        within_class: bool = True,
        scope: Scope = "local",
    ) -> None:
        if max_rounds is not None and max_rounds < 0:
            raise InvalidValue("max_rounds", f"must be zero or positive, got {max_rounds}")
        super().__init__(cost=cost, within_class=within_class, scope=scope)
        self.max_rounds = max_rounds

    def pairs(
        self, costs: torch.Tensor | None, x0: torch.Tensor, x1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(len(costs), device=costs.device), gale_shapley(costs, self.max_rounds)
