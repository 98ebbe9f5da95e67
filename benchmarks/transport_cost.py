"""The paper's third claim: couplings closer to OT learn maps of lower transport cost, in
growing dimension.

    python benchmarks/transport_cost.py                            # digits and d = 2..128
    python benchmarks/transport_cost.py --data mixture-8 --steps 300 --plot cost.png

For each data set (the 1438 training digits as 64-D vectors, and a mixture of eight
Gaussians in d = 2, 8, 32, 128 with N = 2048 points) and each coupler, an MLP flow is
trained from N(0, I) with the same steps, batch and seed; the learned ODE map T (RK4, 16
steps) is applied to M fresh noise samples and its transport cost ``E |x0 - T(x0)|^2`` is
compared with the OT cost between that noise and the data (the floor: exact OT between the M
noise samples and M data points drawn from the set). The ratio's floor is 1 (up to the
floor's sampling error, a few percent) only for a map that reaches the data: the last column,
the exact OT cost between the M mapped samples and M data points, says how far it is (a map
that stops short of the data costs less than the floor). Every coupler trains on the same
finite set: the semi-discrete coupler fits its potentials on it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mfm_core import get_registry
from mfm_core.couplers import ExactCoupler
from mfm_core.datasets.file import Points
from mfm_core.datasets.toy2d import Gaussian
from mfm_core.models.mlp import MLP
from mfm_core.paths.cond_ot import CondOTPath
from mfm_core.protocols import PrepareContext
from mfm_core.runner.training.objective import regression_loss

COUPLERS = ("independent", "exact", "sinkhorn", "semidiscrete")
DATA = ("digits", "mixture-2", "mixture-8", "mixture-32", "mixture-128")
SEMIDISCRETE = {"iterations": 500, "batch": 512, "check_draws": 16384}


def mixture(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """Eight Gaussians of std 0.5 in d dimensions, centred at +-3 along random axes."""
    centres = torch.zeros(8, d)
    axes = torch.randint(d, (8,), generator=generator)
    centres[torch.arange(8), axes] = torch.tensor([3.0, -3.0] * 4)
    which = torch.randint(8, (n,), generator=generator)
    return centres[which] + 0.5 * torch.randn(n, d, generator=generator)


def load(data: str, size: int, seed: int) -> torch.Tensor:
    """The finite training set, (N, d)."""
    if data == "digits":
        digits = get_registry().create("dataset", "digits", {"split": "train"}, path="data")
        return torch.stack([digits[i][0].flatten() for i in range(len(digits))])
    return mixture(size, int(data.split("-")[1]), torch.Generator().manual_seed(seed))


def make_coupler(name: str, points: torch.Tensor, seed: int):
    params = SEMIDISCRETE if name == "semidiscrete" else {}
    coupler = get_registry().create("coupler", name, params, path="coupler")
    context = PrepareContext(
        source=Gaussian(shape=tuple(points.shape[1:])),
        target=Points(points),
        generator=torch.Generator().manual_seed(seed),
    )
    coupler.prepare(context)
    return coupler


def train(coupler, points: torch.Tensor, args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    dim = points.shape[1]
    model = MLP(data_shape=(dim,), hidden=(256, 256, 256))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    path = CondOTPath(sigma_min=0.0)
    generator = torch.Generator().manual_seed(args.seed)
    for _ in range(args.steps):
        x0 = torch.randn(args.batch, dim, generator=generator)
        x1 = points[torch.randint(len(points), (args.batch,), generator=generator)]
        x0, x1, _ = coupler(x0, x1).pairs(x0, x1)
        t = torch.rand(args.batch, generator=generator)
        loss = regression_loss(path, model, x0, x1, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def transport(model: torch.nn.Module, x0: torch.Tensor) -> torch.Tensor:
    solver = get_registry().create("solver", "rk4", {"steps": 16}, path="solver")
    return solver(lambda x, t: model(x, t), x0).x1


def ot_cost(x: torch.Tensor, points: torch.Tensor, seed: int) -> float:
    """Exact OT cost between ``x`` (M, d) and M points drawn from the set: with the noise, the
    floor; with the map's samples ``T(x0)``, how far they are from the data (W2^2)."""
    generator = torch.Generator().manual_seed(seed + 1)
    y = points[torch.randint(len(points), (len(x),), generator=generator)]
    coupling = ExactCoupler(within_class=False)(x, y)
    return float((x[coupling.i] - y[coupling.j]).square().sum(dim=1).mean())


def plot(table: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(table)
    couplers = list(next(iter(table.values())))
    figure, axes = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(couplers)
    for index, name in enumerate(couplers):
        xs = [d + (index - (len(couplers) - 1) / 2) * width for d in range(len(datasets))]
        axes.bar(xs, [table[data][name] for data in datasets], width, label=name)
    axes.axhline(1.0, color="black", linewidth=0.8, label="OT cost (floor)")
    axes.set_xticks(range(len(datasets)), datasets)
    axes.set_xlabel("data (dimension)")
    axes.set_ylabel("E|x0 - T(x0)|^2 / OT cost")
    axes.set_title("Transport cost of the learned ODE map, relative to the OT cost")
    axes.legend()
    axes.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=DATA)
    parser.add_argument("--couplers", nargs="+", default=list(COUPLERS))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--size", type=int, default=2048, help="N points of each mixture")
    parser.add_argument("--eval", type=int, default=1000, help="M noise samples to transport")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    table: dict[str, dict[str, float]] = {}
    lines = []
    for data in args.data:
        points = load(data, args.size, args.seed)
        x0 = torch.randn(args.eval, points.shape[1], generator=torch.Generator().manual_seed(9))
        floor = ot_cost(x0, points, args.seed)
        table[data] = {}
        for name in args.couplers:
            started = time.perf_counter()
            model = train(make_coupler(name, points, args.seed), points, args)
            mapped = transport(model, x0)
            cost = float((mapped - x0).square().sum(dim=1).mean())
            miss = ot_cost(mapped, points, args.seed + 1)
            table[data][name] = cost / floor
            seconds = time.perf_counter() - started
            row = f"{cost:.3f} | {floor:.3f} | {cost / floor:.3f} | {miss:.3f} | {seconds:.0f}"
            lines.append(f"| {data} | {name} | {row} |")
            print(f"{data} {name}: {row}", flush=True)
    print(
        "\n| data | coupler | E \\|x0 - T(x0)\\|^2 | OT cost | ratio | W2^2(T(x0), data) | s |"
        "\n|---|---|---:|---:|---:|---:|---:|"
    )
    print("\n".join(lines))
    if args.plot:
        plot(table, args.plot)
        print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
