"""Semi-discrete OT: each noise sample is paired with the data point its dual potential
chooses, over the whole (finite) training set instead of one minibatch (the semi-dual and its
fit: ``mfm_core.couplers.semidual``).
"""

from __future__ import annotations

import logging
import threading

import attrs
import torch
import torch.distributed as dist

from mfm_core.adapters import check_inputs
from mfm_core.couplers.costs import resolve_cost
from mfm_core.couplers.semidual import FitReport, best_response, fit_potentials, merge_reports
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


class SemiDiscreteCoupler:
    """Pairs each noise sample ``x0[i]`` with the data point ``y_{j*(x0[i])}`` of the whole
    training set, ``j* = argmin_j c(x0, y_j) - g_j`` with fitted potentials ``g``.

    The coupler chooses the data side: the loader's ``x1`` are not used (only their labels
    ``cond``), and the result's ``Coupling.samples`` are ``(x0, points, labels)``, with
    ``j`` indexing the N points. ``i = arange(k)``; points may repeat within a batch.

    Stateful (``StatefulCoupler``): ``prepare`` keeps the source and every point of the
    target; the potentials are fitted at the first coupling, on the device of its samples,
    from the preparation's generator, and are part of the checkpoint. Under an initialised
    ``torch.distributed`` group every rank fits, then rank 0's potentials, report and
    generator state are broadcast to all (:func:`share_rank0`): the ranks hold the same state
    even where the fit is not bit-for-bit deterministic (GPU kernels with atomics). With
    labels and ``within_class``, each class has potentials of its own against the same noise:
    a noise sample at a position of class c (the loader's label there, so the classes keep
    the data's frequencies) is paired within class c. Without labels, or with
    ``within_class`` off, over the whole set. ``report`` holds the last fit's
    :class:`FitReport` (also logged).
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
            semi-dual), while the pairs always use the hard argmin.
        block: data points searched at a time (memory: k x block costs).
        check_draws: noise samples the convergence report counts choices over.
        """
        for name, value in (("batch", batch), ("block", block), ("check_draws", check_draws)):
            if value < 1:
                raise InvalidValue(name, f"expected a positive integer, got {value}")
        if iterations < 0:
            raise InvalidValue("iterations", f"expected zero or more, got {iterations}")
        if step <= 0:
            raise InvalidValue("step", f"expected a positive number, got {step}")
        if eps < 0:
            raise InvalidValue("eps", f"expected zero or a positive number, got {eps}")
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
            "report": None if self.report is None else _timeless(self.report),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if self._generator is None:
            raise RuntimeError("semidiscrete loads a state only after prepare(context)")
        self._potentials = dict(state["potentials"])
        if state["generator"] is not None:
            self._generator.set_state(state["generator"])
        report = None if state["report"] is None else FitReport(**state["report"])
        if self.report is None or attrs.evolve(self.report, seconds=None) != report:
            self.report = report  # the same report but for its time keeps its time

    def _members(self, key: int) -> torch.Tensor | None:
        """The indices of the points of class ``key`` (``None`` for ALL: every point)."""
        if key == ALL:
            return None
        return torch.nonzero(self._labels == key).flatten()

    def _fit(self, keys: list[int], device: torch.device) -> None:
        shared = _group_active()
        if shared and threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "semidiscrete fits its potentials at the first coupling, and under torchrun "
                "that fit broadcasts rank 0's potentials: it must run in the main thread of "
                "every process at the same step, not in the background coupling thread "
                "(couple the first batch in the main thread, or set train.overlap_coupling = "
                "'off')"
            )

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
        if shared:
            self.report = share_rank0(self._potentials, keys, self.report, self._generator)
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
        classes = sorted(set(self._labels.tolist())) if by_class else [ALL]
        keys = sorted(set(cond.tolist())) if by_class else [ALL]
        unknown = sorted(set(keys) - set(classes))
        if unknown:
            raise ValueError(f"semidiscrete was given labels {unknown}, which no point has")
        # Every class is fitted at once, at the first coupling, so that the fit does not
        # depend on which classes the first batches happen to hold.
        missing = [key for key in classes if key not in self._potentials]
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
                rows = torch.nonzero(cond == key).flatten()
                points = self._points[members]
            g = self._potentials[key]
            if g.device != device:  # loaded from a checkpoint: moved once
                g = self._potentials[key] = g.to(device)
            chosen, value = best_response(x0[rows], points, g, self.cost_function, self.block)
            j[rows] = chosen if members is None else members[chosen]
            total_cost += (value + g[chosen]).sum()  # c(x0, y_j*) = (c - g)_min + g_j*
        labels = None if cond is None else self._labels
        return Coupling(
            i=torch.arange(len(x0), device=device),
            j=j,
            cost=float(total_cost) / len(x0),
            is_permutation=False,
            samples=(x0.detach(), self._points, labels),
        )


def _timeless(report: FitReport) -> dict[str, object]:
    """The report as saved: without its fit time, which is no state (a resumed coupler's
    report has ``seconds = None``)."""
    return attrs.asdict(report, filter=lambda field, _: field.name != "seconds")


def _group_active() -> bool:
    """Whether this process is one of several in an initialised ``torch.distributed`` group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def share_rank0(
    potentials: dict[int, torch.Tensor],
    keys: list[int],
    report: FitReport,
    generator: torch.Generator,
) -> FitReport:
    """Overwrite every rank's ``potentials[key]`` (for ``keys``, in place) and ``generator``
    state with rank 0's, and return rank 0's ``report``: two collectives, which every rank
    makes at the same point.

    The potentials travel as one flat tensor: on their own device under NCCL (which takes
    CUDA tensors only), on the CPU under gloo and the other backends.
    """
    device = potentials[keys[0]].device
    travel = device if dist.get_backend() == "nccl" else torch.device("cpu")
    flat = torch.cat([potentials[key].to(travel) for key in keys])
    dist.broadcast(flat, src=0)
    pieces = torch.split(flat, [len(potentials[key]) for key in keys])
    for key, piece in zip(keys, pieces, strict=True):
        potentials[key] = piece.to(device, copy=True)  # not a view of the flat tensor
    box = [attrs.asdict(report), generator.get_state()]
    dist.broadcast_object_list(box, src=0)
    generator.set_state(box[1])
    return FitReport(**box[0])
