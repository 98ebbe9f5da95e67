"""The semi-dual of semi-discrete OT and its stochastic ascent.

For data points ``y_1..y_N`` with uniform weights and noise ``mu``, the OT map sends ``x0``
to ``y_{j*(x0)}``, ``j*(x0) = argmin_j c(x0, y_j) - g_j``, where ``g`` maximises the
semi-dual ``F(g) = (1/N) sum_j g_j + E_{x0 ~ mu}[min_j c(x0, y_j) - g_j]``. Its gradient is
``1/N - P(j* = j)``: at the optimum every point is chosen with frequency 1/N (Genevay,
Cuturi, Peyre, Bach, NeurIPS 2016). Every search here runs over blocks of points, so no
(k, N) matrix is ever held.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import attrs
import torch

from mfm_core.couplers.costs import CostFunction, cost_matrix


@attrs.frozen(kw_only=True)
class FitReport:
    """How close fitted potentials are to optimal, measured on fresh noise.

    ``tv``: total variation ``(1/2) sum_j |f_j - 1/N|`` between the frequency ``f_j`` with
    which each point is chosen over ``draws`` noise samples and uniform; ``tv_floor``: its
    expectation for a perfectly uniform choice over as many draws (multinomial noise,
    about ``sqrt(N / (2 pi draws))``), so ``tv`` near ``tv_floor`` means converged.
    ``max_deviation``: ``max_j |N f_j - 1|``. With classes: the class-size-weighted mean of
    ``tv`` and ``tv_floor``, the maximum of ``max_deviation``. ``seconds``: how long the fit
    took, ``None`` in a report restored from a checkpoint (a coupler's saved state holds no
    timings, so two couplers prepared alike save the same state).
    """

    points: int
    iterations: int
    batch: int
    draws: int
    tv: float
    tv_floor: float
    max_deviation: float
    seconds: float | None = None

    def __str__(self) -> str:
        took = "" if self.seconds is None else f", {self.seconds:.1f} s"
        return (
            f"{self.points} potentials, {self.iterations} iterations of {self.batch} noise "
            f"draws{took}; chosen frequency vs uniform over {self.draws} draws: "
            f"TV {self.tv:.4f} (uniform draws give {self.tv_floor:.4f}), max relative "
            f"deviation {self.max_deviation:.2f}"
        )


def best_response(
    x: torch.Tensor,
    points: torch.Tensor,
    potentials: torch.Tensor,
    cost: CostFunction,
    block: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``j*(x) = argmin_j c(x, y_j) - g_j`` and that minimum, searched ``block`` points at a
    time so that at most a (k, block) matrix is held.

    ``x``: (k, ...), ``points``: (N, ...), ``potentials``: (N,). Returns ``j`` (k,) long and
    the minimum (k,). Ties go to the lowest index, as in one block.
    """
    best = torch.full((len(x),), math.inf, dtype=potentials.dtype, device=x.device)
    index = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for start in range(0, len(points), block):
        values = cost_matrix(x, points[start : start + block], cost)
        values = values - potentials[start : start + block]
        low, where = values.min(dim=1)
        better = low < best  # strictly: an earlier block keeps a tie
        best = torch.where(better, low, best)
        index = torch.where(better, where + start, index)
    return index, best


def choice_frequency(
    x: torch.Tensor,
    points: torch.Tensor,
    potentials: torch.Tensor,
    cost: CostFunction,
    block: int,
    eps: float = 0.0,
) -> torch.Tensor:
    """The mean over ``x`` (B, ...) of the assignment to each of the N points, (N,).

    ``eps = 0``: the hard assignment, ``counts of j*(x) / B``. ``eps > 0``: the soft-min's,
    ``mean_x softmax_j((g_j - c(x, y_j)) / eps)``, in two passes over the blocks (the row
    log-sum-exp first) so that no (B, N) matrix is held.
    """
    n = len(points)
    if eps == 0.0:
        j, _ = best_response(x, points, potentials, cost, block)
        return torch.bincount(j, minlength=n).to(potentials.dtype) / len(x)
    starts = range(0, n, block)

    def scaled(start: int) -> torch.Tensor:
        piece = cost_matrix(x, points[start : start + block], cost)
        return (potentials[start : start + block] - piece) / eps

    lse = torch.full((len(x),), -math.inf, dtype=potentials.dtype, device=x.device)
    for start in starts:
        lse = torch.logaddexp(lse, torch.logsumexp(scaled(start), dim=1))
    return torch.cat([torch.exp(scaled(start) - lse[:, None]).mean(dim=0) for start in starts])


def fit_potentials(
    noise: Callable[[int], torch.Tensor],
    points: torch.Tensor,
    cost: CostFunction,
    *,
    iterations: int,
    batch: int,
    step: float,
    eps: float,
    block: int,
    check_draws: int,
) -> tuple[torch.Tensor, FitReport]:
    """Potentials ``g`` (N,) maximising the semi-dual between ``noise(n)`` (n samples of mu
    on the points' device) and the uniform measure on ``points`` (N, ...).

    Each iteration estimates the gradient ``1/N - f_t`` from the assignment frequency ``f_t``
    of ``batch`` fresh noise draws (:func:`choice_frequency`; soft-min at temperature
    ``eps cbar`` when ``eps > 0``) and ascends with Adam's per-coordinate scaling (moments
    0.9, 0.999) at ``lr_t = step cbar / sqrt(1 + t / 100)``; ``cbar`` is the mean cost, so
    ``step`` and ``eps`` do not depend on the data's scale. The scaling matters because a
    plain step of size ``lr (1/N - f_j)`` moves every coordinate by at most ``lr / N``, while
    points far from the noise's mass need potentials many times larger than their
    neighbours'. The result is the average of the iterates over the second half of the
    ``iterations`` (Polyak-Ruppert tail averaging, which removes most of the noise of the
    last iterates). The report measures the hard assignment on ``check_draws`` more draws.
    """
    started = time.perf_counter()
    n = len(points)
    dtype = torch.float64 if points.dtype == torch.float64 else torch.float32
    probe = noise(batch)
    cbar = sum(
        float(cost_matrix(probe, points[start : start + block], cost).sum())
        for start in range(0, n, block)
    ) / (len(probe) * n)
    scale = max(cbar, 1e-12)
    g = torch.zeros(n, dtype=dtype, device=points.device)
    average, first, second = torch.zeros_like(g), torch.zeros_like(g), torch.zeros_like(g)
    tail = iterations // 2
    for t in range(iterations):
        gradient = 1.0 / n - choice_frequency(noise(batch), points, g, cost, block, eps * scale)
        first.lerp_(gradient, 0.1)
        second.lerp_(gradient.square(), 0.001)
        direction = (first / (1.0 - 0.9 ** (t + 1))) / (
            (second / (1.0 - 0.999 ** (t + 1))).sqrt() + 1e-12
        )
        g += (step * scale / math.sqrt(1.0 + t / 100)) * direction
        if t >= tail:
            average += (g - average) / (t - tail + 1)
    potentials = average if iterations else g
    draws = 0
    counts = torch.zeros(n, dtype=torch.float64, device=points.device)
    while draws < check_draws:
        size = min(batch, check_draws - draws)
        j, _ = best_response(noise(size), points, potentials, cost, block)
        counts += torch.bincount(j, minlength=n).double()
        draws += size
    deviation = counts * (n / draws) - 1.0
    report = FitReport(
        points=n,
        iterations=iterations,
        batch=batch,
        draws=draws,
        tv=0.5 * float(deviation.abs().sum()) / n,
        tv_floor=math.sqrt(n / (2.0 * math.pi * max(draws, 1))),
        max_deviation=float(deviation.abs().max()),
        seconds=time.perf_counter() - started,
    )
    return potentials, report


def merge_reports(reports: list[FitReport]) -> FitReport:
    """One report for the per-class fits: class-size-weighted TV, the worst deviation."""
    total = sum(r.points for r in reports)
    return FitReport(
        points=total,
        iterations=reports[0].iterations,
        batch=reports[0].batch,
        draws=sum(r.draws for r in reports),
        tv=sum(r.tv * r.points for r in reports) / total,
        tv_floor=sum(r.tv_floor * r.points for r in reports) / total,
        max_deviation=max(r.max_deviation for r in reports),
        seconds=sum(r.seconds for r in reports),
    )
