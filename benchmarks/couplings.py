"""Time per coupling: `exact` against scipy and POT's network simplex, and the other couplers.

    python benchmarks/couplings.py                      # k in 64 256 1024 4096, d in 2 3072
    python benchmarks/couplings.py --ks 64 256 --dims 2 --repeats 5
    python benchmarks/couplings.py --ks 256 1024 --others stable heuristic sinkhorn

For each data set (noise x0 ~ N(0, I) to "checkerboard": d/2 independent 2-D checkerboards
side by side, and to "gaussian": 0.5 N(0, I) + 1), batch size k and dimension d, every method
runs on the same tensors, its cost matrix included:

- "scipy": mfm's cost matrix, then scipy.optimize.linear_sum_assignment;
- "emd": mfm's cost matrix in float64, then POT's network simplex ot.emd (what TorchCFM's
  OT-CFM uses), with its iteration cap raised so that it reaches the optimum;
- "exact": mfm's `exact` coupler with its default backend ("auto"), whose choice is printed;
- each coupler named by --others, and "pot sinkhorn" (POT's ot.sinkhorn at the same epsilon
  as mfm's sinkhorn and the same marginal-error guarantee), with the mean cost of its pairs
  relative to the optimum.

The machine may be shared: within a cell the methods' repeats are interleaved (one run of
each, in a shuffled order, per round) and each time is the median over the rounds, so load
that comes and goes falls on every method alike. A call faster than a second gets one
warm-up run first; rounds continue until --repeats and until the cell has run half a second.
"exact / faster" is exact's median over the faster of scipy's and emd's. On a shared or
virtual machine the same solver call varies by tens of percent from run to run, so that ratio
is noisy within about 1.1 at a few repeats; "overhead" is what `exact` adds to its solver,
measured apart (the coupler with its solver replaced by the answer, less the cost matrix),
and "(faster + overhead) / faster" is the ratio it implies.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

import mfm_core.couplers.exact as exact_module
from mfm_core import get_registry
from mfm_core.couplers import ExactCoupler, cost_matrix
from mfm_core.couplers.exact import EMD_MAX_ITER, choose_backend
from mfm_core.datasets.toy2d import Checkerboard

try:
    import ot
except ImportError:  # POT is optional: the emd column and the POT rows are left out
    ot = None

# Sinkhorn settings shared by mfm's plugin and POT's reference run.
SINKHORN_REG = 0.05  # relative to the mean cost
SINKHORN_TOL = 1e-4
SINKHORN_MAX_ITER = 1000

DATA = ("checkerboard", "gaussian")

Pairs = tuple[np.ndarray, np.ndarray]


def samples(data: str, k: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise x0 (k, d) and data x1 (k, d); checkerboard data need an even d (or d = 2)."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(k, d, generator=gen)
    if data == "checkerboard":
        x1 = Checkerboard().sample(k * d // 2, gen).reshape(k, d)
    else:
        x1 = 0.5 * torch.randn(k, d, generator=gen) + 1.0
    return x0, x1


def interleaved_medians(
    methods: dict[str, Callable[[], object]], repeats: int, min_seconds: float = 0.5
) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds of each method over rounds that run every method once in a shuffled
    order, and each method's first result."""
    results, times = {}, {name: [] for name in methods}
    for name, function in methods.items():
        start = time.perf_counter()
        results[name] = function()
        first = time.perf_counter() - start
        if first > 1.0:  # a slow call needs no warm-up: its first run counts
            times[name].append(first)
    order = list(methods)
    shuffle = random.Random(0).shuffle
    rounds = 0
    while rounds < repeats or (sum(sum(t) for t in times.values()) < min_seconds and rounds < 200):
        shuffle(order)
        for name in order:
            if len(times[name]) > rounds:
                continue  # its first run was this round
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
        rounds += 1
    return {name: statistics.median(t) for name, t in times.items()}, results


def _plan_pairs(plan: np.ndarray, rng: np.random.Generator) -> Pairs:
    """Rows kept, one column per row drawn from the plan (what mfm's sinkhorn does)."""
    rows = plan / plan.sum(axis=1, keepdims=True)
    cumulative = rows.cumsum(axis=1)
    draws = rng.random((len(plan), 1))
    j = np.minimum((cumulative < draws).sum(axis=1), len(plan) - 1)
    return np.arange(len(plan)), j


def exact_methods(x0: torch.Tensor, x1: torch.Tensor) -> dict[str, Callable[[], Pairs]]:
    k = len(x0)
    weights = np.full(k, 1.0 / k)
    coupler = ExactCoupler()
    methods = {
        "scipy": lambda: linear_sum_assignment(cost_matrix(x0, x1).numpy()),
        "exact": lambda: (lambda c: (c.i.numpy(), c.j.numpy()))(coupler(x0, x1)),
    }
    if ot is not None:
        methods["emd"] = lambda: np.nonzero(
            ot.emd(
                weights,
                weights,
                cost_matrix(x0, x1).double().numpy(),
                numItermax=EMD_MAX_ITER,
            )
        )
    return methods


def exact_overhead(x0: torch.Tensor, x1: torch.Tensor, cols: np.ndarray) -> float:
    """Seconds ``exact`` spends around its solver: the coupler with its solver replaced by
    the answer (``cols``), less the cost matrix alone, medians of interleaved repeats. Unlike
    a ratio of two solver runs, this does not drown in the machine's run-to-run noise."""
    k = len(x0)
    coupler = ExactCoupler()
    saved = exact_module.linear_sum_assignment, exact_module.emd_assignment
    exact_module.linear_sum_assignment = lambda matrix: (np.arange(k), cols)
    exact_module.emd_assignment = lambda matrix: cols
    try:
        seconds, _ = interleaved_medians(
            {"coupler": lambda: coupler(x0, x1), "costs": lambda: cost_matrix(x0, x1)},
            repeats=50,
            min_seconds=0.2,
        )
    finally:
        exact_module.linear_sum_assignment, exact_module.emd_assignment = saved
    return max(0.0, seconds["coupler"] - seconds["costs"])


def other_methods(
    x0: torch.Tensor, x1: torch.Tensor, names: list[str]
) -> dict[str, Callable[[], Pairs]]:
    methods: dict[str, Callable[[], Pairs]] = {}
    registry = get_registry()
    for name in names:
        params = {}
        if name == "sinkhorn":
            params = {"reg": SINKHORN_REG, "tol": SINKHORN_TOL, "max_iter": SINKHORN_MAX_ITER}
        coupler = registry.create("coupler", name, params)

        def run(coupler=coupler) -> Pairs:
            torch.manual_seed(0)
            coupling = coupler(x0, x1)
            return coupling.i.numpy(), coupling.j.numpy()

        methods[name] = run
    if ot is not None and "sinkhorn" in names:
        k = len(x0)
        weights = np.full(k, 1.0 / k)
        x0n, x1n = x0.double().numpy(), x1.double().numpy()

        def pot_sinkhorn() -> Pairs:
            cost = ot.dist(x0n, x1n)
            plan = ot.sinkhorn(
                weights,
                weights,
                cost,
                reg=SINKHORN_REG * cost.mean(),
                # POT stops on the L2 error of one marginal, mfm on the L1 error of both;
                # L1 <= sqrt(k) L2, so this is the same guarantee.
                stopThr=SINKHORN_TOL / np.sqrt(k),
                numItermax=SINKHORN_MAX_ITER,
                warn=False,
            )
            return _plan_pairs(plan, np.random.default_rng(0))

        methods["pot sinkhorn"] = pot_sinkhorn
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3072])
    parser.add_argument("--data", nargs="+", choices=DATA, default=list(DATA))
    parser.add_argument("--repeats", type=int, default=5, help="rounds per cell (k <= 1024)")
    parser.add_argument("--large-repeats", type=int, default=3, help="rounds per cell (k > 1024)")
    parser.add_argument(
        "--others", nargs="+", default=[], help="more couplers to time, e.g. stable sinkhorn"
    )
    args = parser.parse_args()
    if any(d % 2 and d != 2 for d in args.dims) and "checkerboard" in args.data:
        parser.error("checkerboard data need even dimensions")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; POT: "
        f"{ot.__version__ if ot else 'not installed'}; medians of interleaved repeats"
    )
    print(
        "| data | k | d | scipy ms | emd ms | exact ms | exact / faster | auto "
        "| overhead ms | (faster + overhead) / faster |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    extra: list[str] = []
    for data in args.data:
        for k in args.ks:
            for d in args.dims:
                x0, x1 = samples(data, k, d)
                methods = exact_methods(x0, x1)
                methods.update(other_methods(x0, x1, args.others))
                repeats = args.repeats if k <= 1024 else args.large_repeats
                seconds, results = interleaved_medians(methods, repeats)
                ms = {name: 1e3 * s for name, s in seconds.items()}
                faster = min(ms["scipy"], ms.get("emd", float("inf")))
                emd = f"{ms['emd']:.1f}" if "emd" in ms else "-"
                extra_ms = 1e3 * exact_overhead(x0, x1, results["scipy"][1])
                print(
                    f"| {data} | {k} | {d} | {ms['scipy']:.1f} | {emd} | {ms['exact']:.1f} | "
                    f"{ms['exact'] / faster:.2f} | {choose_backend(k, d)} | {extra_ms:.3f} | "
                    f"{(faster + extra_ms) / faster:.3f} |",
                    flush=True,
                )
                costs = cost_matrix(x0, x1).double().numpy()
                optimum = costs[results["scipy"]].mean()
                for name in methods:
                    if name not in ("scipy", "emd", "exact"):
                        ratio = float(costs[results[name]].mean() / optimum)
                        extra.append(
                            f"| {data} | {k} | {d} | {name} | {ms[name]:.1f} | {ratio:.3f} |"
                        )
    if extra:
        print("\n| data | k | d | method | ms | cost / exact |")
        print("|---|---:|---:|---|---:|---:|")
        print("\n".join(extra))


if __name__ == "__main__":
    main()
