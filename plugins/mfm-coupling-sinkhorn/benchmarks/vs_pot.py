"""Time ``sinkhorn_plan`` against POT's ``ot.sinkhorn`` on the same cost matrices.

    OMP_NUM_THREADS=1 python plugins/mfm-coupling-sinkhorn/benchmarks/vs_pot.py

Both solve the same problem: uniform marginals, the same absolute epsilon
(``reg * mean(C)``, the plugin's default relative ``reg``), ``tol`` as the stopping threshold
checked every 10 iterations, at most ``max_iter`` iterations. POT stops on the L2 norm of its
marginal error, which is never larger than the L1 norm the plugin stops on, so the
comparison favours POT. Columns: median wall time over repeats in ms, and the L1 row+column
marginal error of the returned plan.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import ot
import torch

from mfm_coupling_sinkhorn import sinkhorn_plan


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


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
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"reg={args.reg} (relative) tol={args.tol} max_iter={args.max_iter}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print("| k | d | mfm float32 | POT float64 | POT float32 | POT sinkhorn_log float64 |")
    print("|---|---|---|---|---|---|")
    for d in args.dims:
        for k in args.sizes:
            x0 = torch.randn(k, d)
            x1 = 0.5 * torch.randn(k, d) + torch.randn(1, d)
            costs = torch.cdist(x0.double(), x1.double()).square()
            c32, c64 = costs.float(), costs.numpy()
            eps = args.reg * c64.mean()
            a = np.full(k, 1.0 / k)
            cells = []
            ours = sinkhorn_plan(c32, args.reg, tol=args.tol, max_iter=args.max_iter)
            ms = median_ms(
                lambda c=c32: sinkhorn_plan(c, args.reg, tol=args.tol, max_iter=args.max_iter),
                args.repeats,
            )
            cells.append(f"{ms:.1f} ms ({l1_error(ours.plan.double().numpy()):.0e})")
            for matrix, method in (
                (c64, "sinkhorn"),
                (c64.astype(np.float32), "sinkhorn"),
                (c64, "sinkhorn_log"),
            ):
                weights = a.astype(matrix.dtype)

                def pot(m=matrix, w=weights, method=method, eps=eps):
                    return ot.sinkhorn(
                        w,
                        w,
                        m,
                        eps,
                        method=method,
                        numItermax=args.max_iter,
                        stopThr=args.tol,
                        warn=False,
                    )

                if method == "sinkhorn_log" and k == 4096:
                    cells.append("skipped")
                    continue
                plan = pot()
                ms = median_ms(pot, args.repeats)
                err = l1_error(np.asarray(plan, dtype=np.float64))
                cells.append(f"{ms:.1f} ms ({err:.0e})" if np.isfinite(err) else "NaN")
            print(f"| {k} | {d} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
