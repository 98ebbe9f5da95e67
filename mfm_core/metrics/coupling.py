"""How far the run's coupling is from the optimal plan of a whole reference set: the mean
cost of the pairs it makes, batch by batch as the trainer couples, over the full discrete OT
cost of the set."""

from __future__ import annotations

import copy

import torch

from mfm_core.adapters import adapt
from mfm_core.datasets.draws import draw_labelled
from mfm_core.metrics.w2 import ot_cost
from mfm_core.protocols import EvalContext
from mfm_core.schema import InvalidValue

MAX_REFERENCE = 8192
"""The largest reference set: its exact assignment holds an M x M float64 cost matrix
(0.5 GB at 8192) and takes O(M^3) time."""


class CouplingGap:
    """The cost of the run's coupling against the optimal plan of a reference set.

    A fixed reference set of M noise samples ``x0`` (``data.source``) and M data samples
    ``x1`` (``data.target``, with their labels when the model is class-conditional) is drawn
    from a generator seeded with ``seed``. Its full discrete OT cost ``C* = min_perm
    mean_i |x0_i - x1_perm(i)|^2`` is solved exactly on all M. The run's coupler, in its
    trained state (a stateful coupler's fitted state), couples the set as the trainer does:
    split at random into batches of the run's coupling batch, each coupled on the evaluation
    device; ``C`` is the mean squared Euclidean cost of all its pairs, over ``repeats``
    random splits. Reports ``ratio = C / C*`` (1 is the optimum; a coupler that chooses its
    own data points, such as ``semidiscrete``, pairs with the training set rather than the
    reference's data and may come out slightly below 1), ``pair_cost = C`` and ``ot_cost =
    C*``. The cost is squared Euclidean whatever the coupler's own cost, so that couplers
    compare.

    It does not depend on the solver (``per_solver = False``). The coupler's state is given
    back afterwards and torch's global random state is left as it was, so the evaluation
    changes nothing a resumed run reads.

    Args:
        reference_size: noise and data samples in the reference set, M.
        repeats: random splits of the reference set into coupling batches, averaged.
        seed: seed of the reference set's draws and of its splits.
    """

    per_solver = False
    better = {"ratio": "closer to 1", "pair_cost": "lower"}

    def __init__(self, *, reference_size: int = 2048, repeats: int = 2, seed: int = 0) -> None:
        if not 1 <= reference_size <= MAX_REFERENCE:
            raise InvalidValue(
                "reference_size",
                f"expected a positive integer of at most {MAX_REFERENCE} (the exact "
                f"assignment on M points costs O(M^3) time and 8 M^2 bytes), got "
                f"{reference_size}",
            )
        if repeats < 1:
            raise InvalidValue("repeats", f"expected a positive integer, got {repeats}")
        self.reference_size, self.repeats, self.seed = reference_size, repeats, seed

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        ctx.need("coupler", "coupling_batch", "source", "target")
        m = self.reference_size
        generator = torch.Generator().manual_seed(self.seed)
        x0 = ctx.source.sample(m, generator)
        x1, labels = draw_labelled(ctx.target, m, generator)
        cond = labels if ctx.labels is not None else None  # the trainer's: labels if conditional
        optimum = ot_cost(x0, x1)
        coupler = adapt("coupler", ctx.coupler)
        state = copy.deepcopy(coupler.state_dict())
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        total = 0.0
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)  # for couplers that draw from the global stream
                for _ in range(self.repeats):
                    for rows in torch.randperm(m, generator=generator).split(ctx.coupling_batch):
                        a, b = x0[rows].to(ctx.device), x1[rows].to(ctx.device)
                        c = None if cond is None else cond[rows].to(ctx.device)
                        p0, p1, _ = coupler(a, b, c).pairs(a, b, c)
                        total += float((p0.double() - p1.double()).square().flatten(1).sum())
        finally:
            coupler.load_state_dict(state)
        pair_cost = total / (m * self.repeats)
        return {"ratio": pair_cost / optimum, "pair_cost": pair_cost, "ot_cost": optimum}
