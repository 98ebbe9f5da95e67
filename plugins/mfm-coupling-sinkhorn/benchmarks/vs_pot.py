"""Time ``sinkhorn_plan`` against POT's ``ot.sinkhorn`` on the same cost matrices.

    OMP_NUM_THREADS=1 python plugins/mfm-coupling-sinkhorn/benchmarks/vs_pot.py

Every solver gets the same problem: the squared distances between k Gaussian noise samples
and k data samples in dimension d, uniform marginals, epsilon = reg * mean(C) (the plugin's
relative ``reg``, passed to POT as its absolute ``reg``), at most ``max_iter`` iterations.

Stopping rules differ. The plugin stops when the L1 error of both marginals is below
``tol``; POT stops when the L2 norm of its column-marginal error is below ``stopThr``. Since
L1 <= sqrt(k) * L2, POT with ``stopThr = tol / sqrt(k)`` gives the same guarantee as the
plugin; ``stopThr = tol`` (POT's own reading of the same number) is looser, and is shown
too. Each cell: the best wall time of one call (the solvers take turns, ``--repeats``
rounds of one call each, 20 calls each for k < 1024), the iterations, and the L1 marginal
error of the returned plan. POT's log-domain method is timed apart (its large temporaries
slow down the next solver), and skipped at k = 4096 (minutes).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import ot
import torch

from mfm_coupling_sinkhorn import sinkhorn_plan


def best_times_ms(solvers: list[Callable[[], object]], rounds: int, calls: int) -> list[float]:
    """The best wall time of one call of each solver. The solvers take turns, ``calls``
    calls at a time (so each runs warm), for ``rounds`` rounds (so that a varying load on
    the machine affects them alike)."""
    best = [math.inf] * len(solvers)
    for _ in range(rounds):
        for n, solve in enumerate(solvers):
            for _ in range(calls):
                start = time.perf_counter()
                solve()
                best[n] = min(best[n], 1e3 * (time.perf_counter() - start))
    return best


def l1_error(plan: np.ndarray) -> float:
    k0, k1 = plan.shape
    return float(np.abs(plan.sum(1) - 1 / k0).sum() + np.abs(plan.sum(0) - 1 / k1).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3072])
    parser.add_argument("--reg", type=float, default=0.05)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"reg={args.reg} (relative) tol={args.tol} max_iter={args.max_iter}, "
        f"{torch.get_num_threads()} thread(s); cells: ms, iterations, L1 marginal error"
    )
    print(
        "| k | d | sinkhorn_plan float32 | POT float32 stopThr=tol | POT float32 tol/sqrt(k) "
        "| POT float64 tol/sqrt(k) | POT sinkhorn_log float64 tol/sqrt(k) |"
    )
    print("|---|---|---|---|---|---|---|")
    for d in args.dims:
        for k in args.sizes:
            x0 = torch.randn(k, d)
            x1 = 0.5 * torch.randn(k, d) + torch.randn(1, d)
            costs = torch.cdist(x0.double(), x1.double()).square()
            c32, c64 = costs.float(), costs.numpy()
            eps = args.reg * float(c64.mean())

            def ours(c=c32):
                result = sinkhorn_plan(c, args.reg, tol=args.tol, max_iter=args.max_iter)
                return result.plan, result.iterations

            solvers = [ours]
            runs = [
                (c64.astype(np.float32), "sinkhorn", args.tol),
                (c64.astype(np.float32), "sinkhorn", args.tol / math.sqrt(k)),
                (c64, "sinkhorn", args.tol / math.sqrt(k)),
                (c64, "sinkhorn_log", args.tol / math.sqrt(k)),
            ]
            for matrix, method, threshold in runs:
                if method == "sinkhorn_log" and k >= 4096:
                    continue
                weights = np.full(k, 1.0 / k, dtype=matrix.dtype)

                def pot(m=matrix, w=weights, method=method, threshold=threshold, eps=eps):
                    plan, log = ot.sinkhorn(
                        w,
                        w,
                        m,
                        eps,
                        method=method,
                        numItermax=args.max_iter,
                        stopThr=threshold,
                        warn=False,
                        log=True,
                    )
                    return plan, log.get("niter", len(log["err"]) * 10)

                solvers.append(pot)
            cells = []
            first = [solve() for solve in solvers]  # also the warm-up
            # Small problems take a millisecond: more calls per turn. POT's log-domain method
            # (the last) runs apart: its large temporaries slow down whatever runs next.
            calls = 20 if k < 1024 else 1
            times = best_times_ms(solvers[:4], args.repeats, calls)
            times += best_times_ms(solvers[4:], 1 if k >= 1024 else args.repeats, calls)
            for (plan, iterations), ms in zip(first, times, strict=True):
                if isinstance(plan, torch.Tensor):
                    plan = plan.double().numpy()
                cells.append(f"{ms:.1f} ms, {iterations} it, {l1_error(np.asarray(plan)):.0e}")
            cells += ["skipped"] * (5 - len(cells))
            print(f"| {k} | {d} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
