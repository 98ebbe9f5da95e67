"""Semi-discrete OT: each noise sample is paired with the data point its dual potential
chooses, over the whole (finite) training set instead of one minibatch.

For data points ``y_1..y_N`` with uniform weights and noise ``mu``, the OT map sends ``x0``
to ``y_{j*(x0)}``, ``j*(x0) = argmin_j c(x0, y_j) - g_j``, where ``g`` maximises the
semi-dual ``F(g) = (1/N) sum_j g_j + E_{x0 ~ mu}[min_j c(x0, y_j) - g_j]``. Its gradient is
``1/N - P(j* = j)``: at the optimum every point is chosen with frequency 1/N. The potentials
are fitted by averaged stochastic gradient ascent (Genevay, Cuturi, Peyre, Bach 2016).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import attrs
import torch

from mfm_core.adapters import check_inputs
from mfm_core.couplers.costs import CostFunction, cost_matrix, resolve_cost
from mfm_core.errors import ConfigError
from mfm_core.protocols import (
    Coupling,
    Dataset,
    IndexedDataset,
    PointSet,
    PrepareContext,
)
from mfm_core.schema import InvalidValue

logger = logging.getLogger(__name__)

ALL = -2
"""The key of the potentials fitted over the whole set (labels are -1 and up)."""


@attrs.frozen(kw_only=True)
class FitReport:
    """How close fitted potentials are to optimal, measured on fresh noise.

    ``tv``: total variation ``(1/2) sum_j |f_j - 1/N|`` between the frequency ``f_j`` with
    which each point is chosen over ``draws`` noise samples and uniform; ``tv_floor``: its
    expectation for a perfectly uniform choice over as many draws (multinomial noise,
    about ``sqrt(N / (2 pi draws))``), so ``tv`` near ``tv_floor`` means converged.
    ``max_deviation``: ``max_j |N f_j - 1|``. With classes: the class-size-weighted mean of
    ``tv`` and ``tv_floor``, the maximum of ``max_deviation``.
    """

    points: int
    iterations: int
    batch: int
    draws: int
    tv: float
    tv_floor: float
    max_deviation: float
    seconds: float

    def __str__(self) -> str:
        return (
            f"{self.points} potentials, {self.iterations} iterations of {self.batch} noise "
            f"draws, {self.seconds:.1f} s; chosen frequency vs uniform over {self.draws} draws: "
            f"TV {self.tv:.4f} (uniform draws give {self.tv_floor:.4f}), max relative "
            f"deviation {self.max_deviation:.2f}"
        )


def finite_points(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every sample of a finite data set, (N, *shape), with its labels (N,) or ``None``:
    the rows of a ``PointSet`` (points file), or each item of an ``IndexedDataset``
    (images, digits; the whole set is held in memory)."""
    if isinstance(dataset, IndexedDataset):
        items = [dataset[index] for index in range(len(dataset))]
        points = torch.stack([sample for sample, _ in items]).float()
        if dataset.num_classes is None:
            return points, None
        return points, torch.tensor([label for _, label in items], dtype=torch.long)
    if isinstance(dataset, PointSet):
        return dataset.points.float(), None
    raise ConfigError(
        f"$.coupler: semidiscrete pairs noise with points of a finite data set (a points "
        f"file, digits, an image set); the target {type(dataset).__name__} only draws samples"
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


class SemiDiscreteCoupler:
    """Pairs each noise sample ``x0[i]`` with the data point ``y_{j*(x0[i])}`` of the whole
    training set, ``j* = argmin_j c(x0, y_j) - g_j`` with fitted potentials ``g``.

    The coupler chooses the data side: the loader's ``x1`` are not used (only their labels
    ``cond``), and the result's ``Coupling.samples`` are ``(x0, points, labels)``, with
    ``j`` indexing the N points. ``i = arange(k)``; points may repeat within a batch.

    Stateful (``StatefulCoupler``): ``prepare`` keeps the source and every point of the
    target; the potentials are fitted at the first coupling, on the device of its samples,
    from the preparation's generator (the same on every process, so every rank holds the same
    potentials), and are part of the checkpoint. With labels and ``within_class``, each
    class has potentials of its own against the same noise: a noise sample at a position of
    class c (the loader's label there, so the classes keep the data's frequencies) is paired
    within class c. Without labels, or with ``within_class`` off, over the whole set.
    ``report`` holds the last fit's :class:`FitReport` (also logged).
    """

    is_permutation = False
    draws_global_rng = False

    def __init__(
        self,
        *,
        cost: str = "sqeuclidean",
        within_class: bool = True,
        iterations: int = 1000,
        batch: int = 1024,
        step: float = 0.004,
        eps: float = 0.0,
        block: int = 4096,
        check_draws: int = 65536,
    ) -> None:
        """Args:
        cost: the registered cost between a noise sample and a data point.
        within_class: with labels, pair each noise sample within the class of its position.
        iterations: stochastic ascent iterations of the fit (per class with classes).
        batch: noise samples drawn per iteration.
        step: the step size, relative to the mean cost; it decays as 1/sqrt(1 + t/100).
        eps: soft-min temperature of the fit, relative to the mean cost (0: the hard
            semi-dual). Pairs always use the hard argmin.
        block: data points searched at a time (memory: k x block costs).
        check_draws: noise samples the convergence report counts choices over.
        """
        for name, value in (("iterations", iterations), ("batch", batch), ("block", block)):
            if value < (0 if name == "iterations" else 1):
                raise InvalidValue(name, f"expected a positive integer, got {value}")
        if step <= 0 or eps < 0:
            raise InvalidValue("step" if step <= 0 else "eps", "expected a positive number")
        self.cost = cost
        self.cost_function = resolve_cost(cost)
        self.within_class = within_class
        self.iterations, self.batch, self.step, self.eps = iterations, batch, step, eps
        self.block, self.check_draws = block, check_draws
        self.report: FitReport | None = None
        self._source: Dataset | None = None
        self._generator: torch.Generator | None = None
        self._points: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._potentials: dict[int, torch.Tensor] = {}  # ALL, or a label: (points of it,)

    def prepare(self, context: PrepareContext) -> None:
        points, labels = finite_points(context.target)
        if labels is not None and len(labels) != len(points):
            raise ConfigError("$.data.target: not one label per point")
        self._source, self._generator = context.source, context.generator
        self._points, self._labels = points, labels
        self._potentials = {}

    def state_dict(self) -> dict[str, object]:
        return {
            "potentials": {key: g.cpu() for key, g in self._potentials.items()},
            "generator": None if self._generator is None else self._generator.get_state(),
            "report": None if self.report is None else attrs.asdict(self.report),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self._potentials = dict(state["potentials"])
        if state["generator"] is not None:
            self._generator.set_state(state["generator"])
        self.report = None if state["report"] is None else FitReport(**state["report"])

    def _members(self, key: int) -> torch.Tensor | None:
        """The indices of the points of class ``key`` (``None`` for ALL: every point)."""
        if key == ALL:
            return None
        return torch.nonzero(self._labels == key).flatten()

    def _fit(self, keys: list[int], device: torch.device) -> None:
        def noise(n: int) -> torch.Tensor:
            return self._source.sample(n, self._generator).to(device)

        reports = []
        for key in keys:
            members = self._members(key)
            points = self._points if members is None else self._points[members]
            g, report = fit_potentials(
                noise,
                points.to(device),
                self.cost_function,
                iterations=self.iterations,
                batch=self.batch,
                step=self.step,
                eps=self.eps,
                block=self.block,
                check_draws=self.check_draws,
            )
            self._potentials[key] = g
            reports.append(report)
        self.report = merge_reports(reports)
        logger.info("semidiscrete potentials: %s", self.report)

    @torch.no_grad()
    def __call__(
        self, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None = None
    ) -> Coupling:
        check_inputs(x0, x1, cond)
        if self._points is None:
            raise RuntimeError("semidiscrete couples only after prepare(context)")
        device = x0.device
        if self._points.device != device:
            self._points = self._points.to(device)
            self._labels = None if self._labels is None else self._labels.to(device)
        by_class = cond is not None and self.within_class
        if cond is not None and self._labels is None:
            raise ValueError("semidiscrete was given labels, but its data set has none")
        keys = sorted(set(cond.tolist())) if by_class else [ALL]
        missing = [key for key in keys if key not in self._potentials]
        if missing:
            self._fit(missing, device)
        j = torch.empty(len(x0), dtype=torch.long, device=device)
        total_cost = torch.zeros((), dtype=torch.float64, device=device)
        for key in keys:
            members = self._members(key)
            if members is None:
                rows = torch.arange(len(x0), device=device)
                points = self._points
            else:
                if len(members) == 0:
                    raise ValueError(f"semidiscrete was given label {key}, which no point has")
                rows = torch.nonzero(cond == key).flatten()
                points = self._points[members]
            g = self._potentials[key].to(device)
            chosen, value = best_response(x0[rows], points, g, self.cost_function, self.block)
            j[rows] = chosen if members is None else members[chosen]
            total_cost += (value + g[chosen]).sum()  # c(x0, y_j*) = (c - g)_min + g_j*
        labels = None if cond is None else self._labels
        return Coupling(
            i=torch.arange(len(x0), device=device),
            j=j,
            cost=float(total_cost) / len(x0),
            is_permutation=False,
            samples=(x0, self._points, labels),
        )
