"""How far each coupler's pairs are from the optimal plan of the whole reference set.

    python benchmarks/coupling_gap.py                         # 2-D checkerboard, M = 2048
    python benchmarks/coupling_gap.py --ks 16 64 256 --size 1024 --plot gap.png

A fixed reference set holds M noise samples x0 ~ N(0, I) and M data points (``--data``:
the checkerboard, or d-dimensional Gaussian mixture). Its full discrete OT cost is
``OT = min over permutations s of (1/M) sum_i |x0_i - y_s(i)|^2`` (the ``exact``
coupler on the whole set). A minibatch coupler of batch k splits both sides into M/k
random batches, as the trainer draws them, and couples each; its gap is the mean cost of
all its pairs over ``OT`` (1 is the optimum; independent pairs give about ``E|x0 - y|^2 / OT``). The
semi-discrete coupler fits its potentials on the M points and maps each noise sample to one:
its batch is the whole set whatever k (its pairs use points with frequencies near, not
exactly, 1/M, so its ratio may fall slightly below 1). Each row is the mean over
``--repeats`` random batch splits (one for semidiscrete, whose pairs do not depend on k).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from transport_cost import mixture  # the sibling script (its folder is on sys.path)

from mfm_core import get_registry
from mfm_core.couplers import ExactCoupler
from mfm_core.datasets.file import Points
from mfm_core.datasets.toy2d import Checkerboard, Gaussian
from mfm_core.protocols import PrepareContext

COUPLERS = ("independent", "exact", "sinkhorn", "stable", "heuristic", "semidiscrete")
SEMIDISCRETE = {"iterations": 2000, "batch": 1024, "check_draws": 65536}


def reference(data: str, size: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if data == "checkerboard":
        y = Checkerboard().sample(size, generator)
    else:
        y = mixture(size, dim, generator)
    return Gaussian(shape=tuple(y.shape[1:])).sample(size, generator), y


def full_ot_cost(x0: torch.Tensor, y: torch.Tensor) -> float:
    """The optimal assignment's mean cost, by ``exact`` (the network simplex in 2-D)."""
    coupling = ExactCoupler(within_class=False)(x0, y)
    return float((x0[coupling.i] - y[coupling.j]).double().square().sum(dim=1).mean())


def batched_cost(coupler, x0: torch.Tensor, y: torch.Tensor, k: int, seed: int) -> float:
    """The mean cost of the pairs a minibatch coupler makes over random batches of k."""
    generator = torch.Generator().manual_seed(seed)
    order0, order1 = (
        torch.randperm(len(x0), generator=generator),
        torch.randperm(len(y), generator=generator),
    )
    total = 0.0
    torch.manual_seed(seed)  # couplers that draw (sinkhorn's plan samples, stable's start)
    for start in range(0, len(x0) - k + 1, k):
        a, b = x0[order0[start : start + k]], y[order1[start : start + k]]
        pa, pb, _ = coupler(a, b).pairs(a, b)
        total += float((pa - pb).square().sum())
    return total / (len(x0) // k * k)


def semidiscrete_cost(x0: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[float, str]:
    coupler = get_registry().create("coupler", "semidiscrete", SEMIDISCRETE, path="coupler")
    generator = torch.Generator().manual_seed(seed)
    source = Gaussian(shape=tuple(x0.shape[1:]))
    coupler.prepare(PrepareContext(source=source, target=Points(y), generator=generator))
    pa, pb, _ = coupler(x0, x0).pairs(x0, x0)
    return float((pa - pb).square().sum(dim=1).mean()), str(coupler.report)


def plot(rows: dict[str, dict[int, float]], ks: list[int], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, values in rows.items():
        style = "--" if name in ("independent", "semidiscrete") else "-o"
        axes.plot(ks, [values[k] for k in ks], style, label=name)
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(ks, [str(k) for k in ks])
    axes.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    axes.set_xlabel("coupling batch k (train.coupling_batch)")
    axes.set_ylabel("mean cost of the pairs / full OT cost")
    axes.set_title(title)
    axes.legend(loc="center right")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("checkerboard", "mixture"), default="checkerboard")
    parser.add_argument("--dim", type=int, default=2, help="dimension of the mixture")
    parser.add_argument("--size", type=int, default=2048, help="reference set size M")
    parser.add_argument("--ks", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--couplers", nargs="+", default=list(COUPLERS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    x0, y = reference(args.data, args.size, args.dim, args.seed)
    optimum = full_ot_cost(x0, y)
    print(f"reference: {args.size} noise samples and {args.data} points, OT cost {optimum:.4f}")
    rows: dict[str, dict[int, float]] = {}
    for name in args.couplers:
        started = time.perf_counter()
        if name == "semidiscrete":
            cost, report = semidiscrete_cost(x0, y, args.seed)
            print(f"semidiscrete fit: {report}")
            rows[name] = {k: cost / optimum for k in args.ks}
        else:
            coupler = get_registry().create("coupler", name, {}, path="coupler")
            rows[name] = {
                k: np.mean(
                    [batched_cost(coupler, x0, y, k, args.seed + r) for r in range(args.repeats)]
                )
                / optimum
                for k in args.ks
            }
        print(f"{name}: {time.perf_counter() - started:.1f} s")
    print()
    print("| coupler | " + " | ".join(f"k = {k}" for k in args.ks) + " |")
    print("|---|" + "---|" * len(args.ks))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{values[k]:.3f}" for k in args.ks) + " |")
    if args.plot:
        title = f"Pairs' cost over the full OT cost ({args.data}, M = {args.size})"
        plot(rows, args.ks, title, args.plot)
        print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
