"""Other routes to the exact assignment, measured against scipy and the network simplex.

    python benchmarks/exact_routes.py                 # k in 256 1024, d in 2 3072
    python benchmarks/exact_routes.py --ks 256 --dims 2 --repeats 9

Issue 13 asked whether a warm start or an auction beats the two solvers `exact` chooses from.
scipy's `linear_sum_assignment` takes no starting point, but the optimal permutation of C is
also that of the reduced matrix C - u 1^T - 1 v^T for any potentials u, v, and a
shortest-augmenting-path solver started on reduced costs that are already near zero along
the optimum may search less. POT's `ot.emd` (from 0.9.6) takes starting potentials
(`potentials_init`). Measured per cell (same tensors, repeats interleaved, medians):

- "scipy", "emd": the two solvers on C (float64);
- "scipy | oracle duals": scipy on C reduced by the optimal duals from ot.emd (the best a warm
  start could do; computing those duals is not counted, so this is a bound, not a method);
- "scipy | sinkhorn duals": Sinkhorn potentials at epsilon = 1% of the mean cost (torch, log
  domain, 200 iterations, counted), then scipy on the reduced matrix;
- "emd | oracle duals", "emd | sinkhorn duals": the network simplex started from those
  potentials (the oracle's not counted, Sinkhorn's counted);
- "scipy | previous batch", "emd | previous batch": what training could use: the optimal
  data-side potentials v' of an earlier batch (x', y') of the same distributions, carried to
  this batch by c-transforms (u(x_i) = min_j C(x_i, y'_j) - v'_j, then
  v(y_j) = min_i C(x_i, y_j) - u(x_i); the extra cost matrix and both transforms counted),
  then scipy on the reduced matrix, or the network simplex started from those potentials;
- "auction": a vectorised (Jacobi) forward auction with epsilon scaling down to
  1e-9 of the cost range / k (torch), and its cost gap to the optimum (float costs give an
  auction no exactness guarantee, so a gap above zero means it is not an exact route); only
  for k <= 256, where it already takes tens of times the solvers' time.

Each route's assignment is checked: the exact ones must reach the optimal cost (to 1e-9
relative); "gap" is reported for the auction.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from mfm_core.couplers import cost_matrix

try:
    import ot
except ImportError:
    ot = None

sys.path.insert(0, str(Path(__file__).parent))
from couplings import interleaved_medians, samples  # noqa: E402  (the sibling script)


def sinkhorn_potentials(costs: torch.Tensor, eps: float, iters: int = 200) -> tuple:
    """Log-domain Sinkhorn potentials (f, g) of uniform marginals."""
    k = len(costs)
    log_w = torch.full((k,), -np.log(k), dtype=costs.dtype)
    f = torch.zeros(k, dtype=costs.dtype)
    g = torch.zeros(k, dtype=costs.dtype)
    for _ in range(iters):
        f = -eps * torch.logsumexp((g[None, :] - costs) / eps + log_w[None, :], dim=1)
        g = -eps * torch.logsumexp((f[:, None] - costs) / eps + log_w[:, None], dim=0)
    return f, g


def auction(costs: torch.Tensor, final_eps: float) -> torch.Tensor:
    """A forward auction (Jacobi: every unassigned row bids at once) minimising the cost,
    with epsilon scaling by 5 from a quarter of the cost range down to ``final_eps``."""
    k = len(costs)
    benefit = -costs
    prices = torch.zeros(k, dtype=costs.dtype)
    arange = torch.arange(k)
    eps = float(benefit.max() - benefit.min()) / 4
    while True:
        owner = torch.full((k,), -1, dtype=torch.long)  # row owning each column
        column = torch.full((k,), -1, dtype=torch.long)  # column of each row
        free = arange
        while len(free):
            values = benefit[free] - prices[None, :]
            top, index = values.topk(2, dim=1)
            best = index[:, 0]
            bids = prices[best] + (top[:, 0] - top[:, 1]) + eps
            # The highest bid on each column wins it.
            high = torch.full((k,), -float("inf"), dtype=costs.dtype)
            high = high.scatter_reduce(0, best, bids, reduce="amax")
            winning = bids == high[best]
            # One winner per column among equal bids: the last writer.
            winner = torch.full((k,), -1, dtype=torch.long)
            winner[best[winning]] = free[winning]
            won = (winner >= 0).nonzero().squeeze(1)
            losers_prev = owner[won]
            column[losers_prev[losers_prev >= 0]] = -1
            owner[won] = winner[won]
            column[winner[won]] = won
            prices[won] = high[won]
            free = (column < 0).nonzero().squeeze(1)
        if eps <= final_eps:
            return column
        eps = max(eps / 5, final_eps)


def measure_cell(data: str, k: int, d: int, repeats: int) -> tuple[dict[str, float], float | None]:
    """Median milliseconds of each route on one cell, and the auction's relative cost gap;
    the exact routes are checked to reach the optimum."""
    x0, x1 = samples(data, k, d)
    costs = cost_matrix(x0, x1).double()
    matrix = costs.numpy()
    w = np.full(k, 1.0 / k)
    _, log = ot.emd(w, w, matrix, numItermax=100_000_000, log=True)
    reduced_oracle = matrix - log["u"][:, None] - log["v"][None, :]
    eps = 0.01 * float(costs.mean())
    span = float(costs.max() - costs.min())
    x0_prev, x1_prev = samples(data, k, d, seed=1)
    _, log_prev = ot.emd(
        w, w, cost_matrix(x0_prev, x1_prev).double().numpy(), numItermax=100_000_000, log=True
    )

    def carried() -> tuple[np.ndarray, np.ndarray]:
        cross = cost_matrix(x0, x1_prev).double().numpy()
        u = (cross - log_prev["v"][None, :]).min(1)
        return u, (matrix - u[:, None]).min(0)

    def previous() -> np.ndarray:
        u, v = carried()
        return linear_sum_assignment(matrix - u[:, None] - v[None, :])[1]

    def emd_previous() -> np.ndarray:
        return emd(carried())

    def warm() -> np.ndarray:
        f, g = sinkhorn_potentials(costs, eps)
        return linear_sum_assignment((costs - f[:, None] - g[None, :]).numpy())[1]

    def emd(start: tuple | None = None) -> np.ndarray:
        if start is None:
            return ot.emd(w, w, matrix, numItermax=100_000_000).argmax(1)
        plan = ot.emd(w, w, matrix, numItermax=100_000_000, potentials_init=start)
        return plan.argmax(1)

    def emd_warm() -> np.ndarray:
        f, g = sinkhorn_potentials(costs, eps)
        return emd((f.numpy(), g.numpy()))

    methods = {
        "scipy": lambda: linear_sum_assignment(matrix)[1],
        "emd": emd,
        "oracle": lambda: linear_sum_assignment(reduced_oracle)[1],
        "warm": warm,
        "emd oracle": lambda: emd((log["u"], log["v"])),
        "emd warm": emd_warm,
        "previous": previous,
        "emd previous": emd_previous,
    }
    if k <= 256:
        methods["auction"] = lambda: auction(costs, 1e-9 * span / k).numpy()
    seconds, answers = interleaved_medians(methods, repeats)
    rows = np.arange(k)
    best = matrix[rows, answers["scipy"]].sum()
    for name in ("emd", "oracle", "warm", "emd oracle", "emd warm", "previous", "emd previous"):
        total = matrix[rows, answers[name]].sum()
        assert abs(total - best) <= 1e-9 * abs(best), (name, total, best)
    gap = matrix[rows, answers["auction"]].sum() / best - 1 if "auction" in answers else None
    return {n: 1e3 * t for n, t in seconds.items()}, gap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3072])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if ot is None:
        print("error: POT is not installed (pip install 'mfm[pot]')")
        return 2
    torch.set_num_threads(1)  # the solvers are single-threaded; so is this comparison
    print(
        "| data | k | d | scipy ms | emd ms | scipy, oracle duals | scipy, sinkhorn duals "
        "| emd, oracle duals | emd, sinkhorn duals | scipy, previous batch "
        "| emd, previous batch | auction ms (gap) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for data in ("checkerboard", "gaussian"):
        for d in args.dims:
            for k in args.ks:
                ms, gap = measure_cell(data, k, d, args.repeats)
                auction = "-" if gap is None else f"{ms['auction']:.1f} ({gap:.1e})"
                print(
                    f"| {data} | {k} | {d} | {ms['scipy']:.1f} | {ms['emd']:.1f} | "
                    f"{ms['oracle']:.1f} | {ms['warm']:.1f} | {ms['emd oracle']:.1f} | "
                    f"{ms['emd warm']:.1f} | {ms['previous']:.1f} | {ms['emd previous']:.1f} | "
                    f"{auction} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
