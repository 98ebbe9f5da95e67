"""BatchOT: the optimal permutation inside a minibatch."""

from __future__ import annotations

import functools
import logging
import math
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from mfm_core.couplers.base import PairCoupler, Scope
from mfm_core.schema import InvalidValue

logger = logging.getLogger(__name__)

Backend = Literal["auto", "scipy", "emd", "pot"]
BACKENDS = ("auto", "scipy", "emd")
_ALIASES = {"pot": "emd"}

# The rule of ``backend = "auto"``, from benchmarks/couplings.py on an idle 2-core CPU (see
# docs/couplers.md): the network simplex wins on low-dimensional samples from k = 256 on
# (1.4 to 15 times from k = 256 to 4096), the two are even at k = 128, and scipy wins on
# high-dimensional samples and on small batches.
EMD_MAX_DIM = 4
EMD_MIN_K = 256

# POT stops the network simplex after this many iterations; its default (1e5) stops
# k = 4096 before the optimum.
EMD_MAX_ITER = 100_000_000


@functools.cache
def _import_pot():  # one import attempt per process, not one per coupling
    try:
        import ot
    except ImportError:
        return None
    return ot


def choose_backend(k: int, d: int) -> str:
    """The solver ``backend = "auto"`` uses for a (k, k) cost matrix between samples of
    ``d`` dimensions: ``"emd"`` (POT's network simplex) for ``d <= EMD_MAX_DIM`` and
    ``k >= EMD_MIN_K`` when POT is installed, else ``"scipy"``. Both solve on the CPU, so the
    device does not change the choice."""
    if d <= EMD_MAX_DIM and k >= EMD_MIN_K and _import_pot() is not None:
        return "emd"
    return "scipy"


def emd_assignment(costs: np.ndarray) -> np.ndarray:
    """The column assigned to each row by POT's network simplex on the (k, k) ``costs``
    (solved in float64) with uniform marginals, shape (k,).

    An optimal vertex of the uniform transport polytope is a permutation matrix (scaled by
    1/k). When the solver does not return one (it stopped early, or rounding split mass on
    tied costs), the plan is repaired by scipy's assignment, which is exact.
    """
    ot = _import_pot()
    k = len(costs)
    weights = np.full(k, 1.0 / k)
    plan, log = ot.emd(weights, weights, costs, numItermax=EMD_MAX_ITER, log=True)
    rows, cols = np.nonzero(plan > 0.5 / k)
    if log["result_code"] == 1 and len(rows) == k and np.array_equal(rows, np.arange(k)):
        assigned = np.zeros(k, dtype=bool)
        assigned[cols] = True
        if assigned.all():
            return cols
    logger.debug("network simplex plan is not a permutation (%s); solving with scipy", log)
    return linear_sum_assignment(costs)[1]


class ExactCoupler(PairCoupler):
    """The permutation ``j`` minimising ``sum_i C[i, j(i)]`` over the (k, k) cost matrix.

    Every x0 and every x1 is used exactly once: ``i = arange(k)``, ``j`` the optimal
    assignment, found by ``backend``: ``"scipy"`` (``scipy.optimize.linear_sum_assignment``,
    shortest augmenting paths, O(k^3)), ``"emd"`` (alias ``"pot"``: POT's network simplex
    ``ot.emd``, needs ``pip install 'mfm[pot]'``), or ``"auto"``, which picks per call by
    :func:`choose_backend`. On a GPU the cost matrix is computed on the device and crosses
    to the CPU once, in float32 (k = 4096: 64 MiB); the indices go back to the device in one
    transfer.

    Args:
        backend: the assignment solver: "scipy" (shortest augmenting paths), "emd" or its alias
            "pot" (POT's network simplex, needs mfm[pot]), or "auto" to pick one per call.
    """

    solves_on_host = True
    draws_global_rng = False

    def __init__(
        self,
        *,
        cost: str = "sqeuclidean",
        within_class: bool = True,
        scope: Scope = "local",
        backend: Backend = "auto",
    ) -> None:
        super().__init__(cost=cost, within_class=within_class, scope=scope)
        backend = _ALIASES.get(backend, backend)
        if backend not in BACKENDS:
            raise InvalidValue(
                "backend", f"expected one of 'auto', 'scipy', 'emd' (or 'pot'), got {backend!r}"
            )
        if backend == "emd" and _import_pot() is None:
            raise InvalidValue(
                "backend",
                "the network simplex needs POT, which is not installed: "
                "pip install 'mfm[pot]' (or choose backend = 'scipy' or 'auto')",
            )
        self.backend = backend

    def pairs(
        self, costs: torch.Tensor | None, x0: torch.Tensor, x1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The base class has already moved the costs to the CPU (solves_on_host). Both
        # solvers convert them to float64 themselves (exactly, from float32).
        k = costs.shape[0]
        backend = self.backend
        if backend == "auto":
            backend = choose_backend(k, math.prod(x0.shape[1:]))
        matrix = costs.numpy()
        if backend == "emd":
            rows, cols = np.arange(k), emd_assignment(matrix)
        else:
            rows, cols = linear_sum_assignment(matrix)
        return torch.from_numpy(rows), torch.from_numpy(cols)
