"""The shared steps of every pairing coupler: checks, no-grad, cost matrix, classes, scope."""

from __future__ import annotations

import abc
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from mfm_core.adapters import check_inputs
from mfm_core.couplers.costs import CostFunction, cost_matrix, resolve_cost
from mfm_core.errors import PluginError
from mfm_core.protocols import Coupling
from mfm_core.schema import InvalidValue

Scope = Literal["local", "global"]


class PairCoupler(abc.ABC):
    """Base of couplers that choose index pairs ``(i, j)`` inside one minibatch.

    ``__call__(x0, x1, cond)`` takes ``x0`` and ``x1`` of shape (k, ...) with the same
    per-sample shape, computes the (k, k) cost matrix when ``cost`` names a cost (see
    ``mfm_core.couplers.costs``), and asks ``pairs`` for the indices. Subclasses implement
    ``pairs`` and set ``is_permutation`` (true when every sample is used exactly once).

    A subclass that takes parameters calls ``super().__init__(cost=..., within_class=...,
    scope=...)`` from its own ``__init__``: that resolves the cost once, through the registry
    that builds the coupler, and checks the options. A subclass without an ``__init__`` of its
    own inherits this one (so its TOML keys are ``cost``, ``within_class`` and ``scope``).

    Options every pairing coupler shares:

    - ``within_class``: when ``cond`` (the labels of ``x1``, shape (k,)) is given, couple
      within each class: the samples at the positions of class c on both sides form a
      sub-batch of their own, so no pair crosses classes. The noise is independent of the
      labels, so the noise at those positions is a random share of the batch. Label -1 (no
      label) is a class of its own. Off, or without ``cond``: every sample may pair with
      every other.
    - ``scope``: ``"local"`` couples each process's batch. ``"global"`` under
      ``torch.distributed``: every rank's samples are gathered, rank 0 solves one coupling of
      the whole batch (the concatenation in rank order), and each rank gets an equal,
      contiguous share of the pairs, which index the gathered batch (``Coupling.samples``;
      ``Coupling.pairs`` returns the rank's training pairs). The pairs are those a single
      process finds on the concatenated batch with rank 0's random state. Without an
      initialised process group, global is local.
    """

    is_permutation: bool = True
    # True for couplers that solve on the CPU (scipy): the cost matrix then crosses from the
    # device once, before the batch is split into classes, not once per class.
    solves_on_host: bool = False
    # False for couplers that draw nothing from torch's global random generator: the trainer
    # may then couple the next batch in a background thread (train.overlap_coupling).
    draws_global_rng: bool = True

    def __init__(
        self,
        *,
        cost: str | None = "sqeuclidean",
        within_class: bool = True,
        scope: Scope = "local",
    ) -> None:
        """The options every pairing coupler takes.

        Args:
            cost: the registered cost between a noise and a data sample ("sqeuclidean", "l1",
                "cosine", or a plugin's), or None for a coupler that needs no cost matrix.
            within_class: with labels, pair each data sample only with noise of its class.
            scope: "local" couples each process's batch; "global" gathers every process's
                batch and couples them together (torchrun).
        """
        self.cost = cost
        self.cost_function: CostFunction | None = None if cost is None else resolve_cost(cost)
        if scope not in ("local", "global"):
            raise InvalidValue("scope", f"expected 'local' or 'global', got {scope!r}")
        self.within_class = within_class
        self.scope = scope

    @torch.no_grad()
    def __call__(
        self, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None = None
    ) -> Coupling:
        if "cost_function" not in self.__dict__:
            raise PluginError(
                f"{type(self).__name__}.__init__ must call super().__init__(cost=..., "
                "within_class=..., scope=...)"
            )
        check_inputs(x0, x1, cond)
        if self.scope == "global" and dist.is_available() and dist.is_initialized():
            return self._couple_global(x0, x1, cond)
        return self._couple(x0, x1, cond)

    def _couple(self, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None) -> Coupling:
        costs = None if self.cost_function is None else cost_matrix(x0, x1, self.cost_function)
        if costs is not None and self.solves_on_host:
            costs = costs.cpu()
        if cond is None or not self.within_class:
            i, j = self.pairs(costs, x0, x1)
        else:
            i, j = self._pairs_within_classes(costs, x0, x1, cond)
        mean_cost = None if costs is None else _mean_cost(costs, i, j)
        i, j = (idx.to(device=x0.device, dtype=torch.long) for idx in (i, j))
        return Coupling(i=i, j=j, cost=mean_cost, is_permutation=self.is_permutation)

    def _pairs_within_classes(
        self, costs: torch.Tensor | None, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.argsort(cond, stable=True)
        _, counts = torch.unique_consecutive(cond[order], return_counts=True)
        pieces_i, pieces_j = [], []
        for members in torch.split(order, counts.tolist()):
            if len(members) == 1:  # a class seen once pairs with itself: nothing to solve
                pieces_i.append(members)
                pieces_j.append(members)
                continue
            sub_costs = None if costs is None else costs[members][:, members]
            i, j = self.pairs(sub_costs, x0[members], x1[members])
            pieces_i.append(members[i.to(members.device)])
            pieces_j.append(members[j.to(members.device)])
        return torch.cat(pieces_i), torch.cat(pieces_j)

    def _couple_global(
        self, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None
    ) -> Coupling:
        world, rank = dist.get_world_size(), dist.get_rank()
        gathered_x0, gathered_x1 = _all_gather(x0), _all_gather(x1)
        gathered_cond = None if cond is None else _all_gather(cond)
        if rank == 0:
            coupling = self._couple(gathered_x0, gathered_x1, gathered_cond)
            header = torch.tensor(
                [len(coupling.i), coupling.cost if coupling.cost is not None else float("nan")],
                dtype=torch.float64,
                device=x0.device,
            )
        else:
            header = torch.empty(2, dtype=torch.float64, device=x0.device)
        dist.broadcast(header, src=0)
        count = int(header[0].item())
        pairs = (
            torch.stack([coupling.i, coupling.j])
            if rank == 0
            else torch.empty(2, count, dtype=torch.long, device=x0.device)
        )
        dist.broadcast(pairs, src=0)
        share = torch.tensor_split(pairs, world, dim=1)[rank]
        cost = header[1].item()
        return Coupling(
            i=share[0],
            j=share[1],
            cost=None if cost != cost else cost,
            is_permutation=self.is_permutation,
            samples=(gathered_x0, gathered_x1, gathered_cond),
        )

    @abc.abstractmethod
    def pairs(
        self, costs: torch.Tensor | None, x0: torch.Tensor, x1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return index tensors ``(i, j)`` of equal length; ``costs`` is (k, k) or ``None``."""


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    """The concatenation of every rank's ``x`` in rank order (equal sizes on every rank)."""
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(x)], device=x.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"global coupling needs the same batch on every rank, got {[int(s) for s in sizes]}"
        )
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _mean_cost(costs: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> float:
    """The mean of ``costs[i, j]``; on the CPU through numpy, which indexes a small matrix
    in a fraction of torch's time (this is on every coupling's path)."""
    if costs.is_cpu and i.is_cpu and j.is_cpu:
        values = costs.numpy()[i.numpy(), j.numpy()]
        return float(values.sum(dtype=np.float64)) / len(values)
    return costs[i, j].mean().item()
