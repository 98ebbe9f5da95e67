"""Time per coupling of every installed minibatch coupler (all but reflow), next to scipy and POT.

    python benchmarks/couplings.py                      # k in 64 256 1024 4096, d in 2 3072
    python benchmarks/couplings.py --ks 64 256 --dims 2 --repeats 5

For each batch size k and dimension d: noise x0 ~ N(0, I) and data x1 (a shifted, scaled
Gaussian) of k samples each; every coupler is timed on the same tensors, including its cost
matrix. Reference rows: "scipy lsa + cost" (mfm's cost matrix, then
scipy.optimize.linear_sum_assignment: what `exact` must stay close to), and, when POT is
installed, "pot emd" and "pot sinkhorn" (POT's cost computation with ot.dist, then the
solver, at the same epsilon as mfm's sinkhorn and a stopping threshold giving the same
marginal-error guarantee). "cost / exact" is the mean
cost of the chosen pairs relative to the exact assignment (1.0 is optimal; for plans, the
cost of the pairs drawn). Times are the median of --repeats runs (more for fast calls) after
one warm-up run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from mfm_core import get_registry
from mfm_core.couplers import cost_matrix

try:
    import ot
except ImportError:  # POT is optional: its rows are left out
    ot = None

# Sinkhorn settings shared by mfm's plugin and POT's reference run.
SINKHORN_REG = 0.05  # relative to the mean cost
SINKHORN_TOL = 1e-4
SINKHORN_MAX_ITER = 1000


def _time(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    """The median time of at least ``repeats`` runs, and of more while they total under
    half a second (fast calls are noisy), after one warm-up run."""
    result = function()  # warm-up (and the result whose quality is reported)
    times: list[float] = []
    while len(times) < repeats or (sum(times) < 0.5 and len(times) < 200):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _pair_cost(costs: torch.Tensor, pairs: tuple[np.ndarray, np.ndarray]) -> float:
    i, j = pairs
    return float(costs[torch.as_tensor(i), torch.as_tensor(j)].mean())


def _plan_pairs(plan: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows kept, one column per row drawn from the plan (what mfm's sinkhorn does)."""
    rows = plan / plan.sum(axis=1, keepdims=True)
    cumulative = rows.cumsum(axis=1)
    draws = rng.random((len(plan), 1))
    j = np.minimum((cumulative < draws).sum(axis=1), len(plan) - 1)
    return np.arange(len(plan)), j


def bench(k: int, d: int, repeats: int, couplers: list[str], budget: float) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(k, d, generator=gen)
    x1 = 0.5 * torch.randn(k, d, generator=gen) + 1.0
    costs = cost_matrix(x0, x1)
    rows: list[dict] = []

    def add(method: str, function: Callable[[], object], pairs: Callable[[object], tuple]):
        seconds, result = _time(function, repeats)
        cost = _pair_cost(costs, pairs(result))
        rows.append({"k": k, "d": d, "method": method, "ms": 1e3 * seconds, "cost": cost})

    add(
        "scipy lsa + cost",
        lambda: linear_sum_assignment(cost_matrix(x0, x1).numpy()),
        lambda result: result,
    )
    registry = get_registry()
    for name in couplers:
        params = {}
        if name == "sinkhorn":
            params = {"reg": SINKHORN_REG, "tol": SINKHORN_TOL, "max_iter": SINKHORN_MAX_ITER}
        coupler = registry.create("coupler", name, params)
        torch.manual_seed(0)
        add(name, lambda coupler=coupler: coupler(x0, x1), lambda c: (c.i, c.j))
        if rows[-1]["ms"] / 1e3 * (repeats + 1) > budget:
            print(f"  ({name} took {rows[-1]['ms'] / 1e3:.1f} s at k={k}, d={d})", flush=True)
    if ot is not None:
        a = np.full(k, 1.0 / k)
        x0n, x1n = x0.double().numpy(), x1.double().numpy()
        add(
            "pot emd",
            # POT's default cap of 1e5 iterations stops k = 4096 before the optimum.
            lambda: ot.emd(a, a, ot.dist(x0n, x1n), numItermax=100_000_000),
            lambda plan: (np.arange(k), plan.argmax(axis=1)),
        )
        rng = np.random.default_rng(0)
        # POT's log-domain method is 20 to 100 times slower; at k = 4096 it would dominate.
        for method in ("sinkhorn", "sinkhorn_log") if k < 4096 else ("sinkhorn",):

            def pot_sinkhorn(method: str = method) -> np.ndarray:
                cost = ot.dist(x0n, x1n)
                return ot.sinkhorn(
                    a,
                    a,
                    cost,
                    reg=SINKHORN_REG * cost.mean(),
                    method=method,
                    # POT stops on the L2 error of one marginal, mfm on the L1 error of both;
                    # L1 <= sqrt(k) L2, so this is the same guarantee.
                    stopThr=SINKHORN_TOL / np.sqrt(k),
                    numItermax=SINKHORN_MAX_ITER,
                    warn=False,
                )

            add(f"pot {method}", pot_sinkhorn, lambda plan: _plan_pairs(plan, rng))
    optimum = rows[0]["cost"]
    for row in rows:
        row["ratio"] = row["cost"] / optimum
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3072])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--couplers", nargs="+", default=None, help="default: every installed one but reflow"
    )
    parser.add_argument("--budget", type=float, default=60.0, help="seconds; slower rows are noted")
    args = parser.parse_args()
    # reflow pairs noise with a trained run's samples (it needs a run): not a minibatch coupling.
    couplers = args.couplers or [n for n in get_registry().names("coupler") if n != "reflow"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; POT: "
        f"{ot.__version__ if ot else 'not installed'}; couplers: {', '.join(couplers)}"
    )
    print("| k | d | method | ms | cost / exact |")
    print("|---:|---:|---|---:|---:|")
    for k in args.ks:
        for d in args.dims:
            for row in bench(k, d, args.repeats if k <= 1024 else 1, couplers, args.budget):
                print(
                    f"| {row['k']} | {row['d']} | {row['method']} | {row['ms']:.1f} | "
                    f"{row['ratio']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
