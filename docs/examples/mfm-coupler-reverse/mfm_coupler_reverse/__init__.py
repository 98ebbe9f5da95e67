"""Example mfm plugin: the coupler ``reverse``, registered through the ``mfm.plugins`` entry
point of this distribution (see pyproject.toml)."""

from __future__ import annotations

import torch

from mfm_core import InvalidValue, PairCoupler, Register, hookimpl


class ReverseCoupler(PairCoupler):
    """Pairs noise ``i`` with data ``j = (k - 1 - i + shift) mod k`` in a batch of k.

    A permutation (every sample used once) that ignores the samples' values, so no cost
    matrix is computed and ``Coupling.cost`` is ``None``. TOML: ``[coupler] name = "reverse"``,
    optional ``shift = 1``.

    Args:
        shift: how many places the reversed data side is rotated, 0 or more.
    """

    def __init__(self, *, shift: int = 0, within_class: bool = True) -> None:
        super().__init__(cost=None, within_class=within_class)
        if shift < 0:
            raise InvalidValue("shift", f"must be zero or positive, got {shift}")
        self.shift = shift

    def pairs(
        self, costs: torch.Tensor | None, x0: torch.Tensor, x1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = len(x0)
        i = torch.arange(k, device=x0.device)
        return i, (k - 1 - i + self.shift) % k


@hookimpl
def register_couplers(register: Register) -> None:
    register("reverse", ReverseCoupler)
