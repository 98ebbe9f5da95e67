"""The independent coupling ("CondOT" in the paper): the pairing as drawn."""

from __future__ import annotations

import torch

from mfm_core.couplers.base import PairCoupler, Scope


class IndependentCoupler(PairCoupler):
    """Keeps the random pairing as drawn: ``i = j = arange(k)``.

    The minibatches are independent draws, so pairing them in order is the independent
    (uniform) plan. No cost is computed, so ``Coupling.cost`` is ``None``.

    Args:
        within_class: accepted so that every coupler takes the same options; it changes nothing
            here, since each sample keeps its partner.
    """

    draws_global_rng = False

    def __init__(self, *, within_class: bool = True, scope: Scope = "local") -> None:
        super().__init__(cost=None, within_class=within_class, scope=scope)

    def pairs(
        self, costs: torch.Tensor | None, x0: torch.Tensor, x1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        identity = torch.arange(len(x0), device=x0.device)
        return identity, identity
