"""The extension points of mfm: what a coupler, path, vector field, solver, dataset, metric,
feature map and tracker is.

Every component a plugin registers satisfies one of these protocols. Results are small frozen
attrs classes rather than tuples, so that new fields never break existing callers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
import torch

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A velocity field ``v(x, t)``: ``x`` of shape (batch, ...), ``t`` of shape (batch,)."""


@attrs.frozen(kw_only=True)
class Coupling:
    """The pairs chosen by a coupler: training pairs are ``(x0[i], x1[j])``.

    ``i`` and ``j``: LongTensors of length k (one pair per noise sample) on the device of
    ``x0``. Unpacks as ``i, j = coupling``. ``cost`` is the mean cost of the chosen pairs under
    the coupler's cost function (``None`` when the coupler computed no cost).
    ``is_permutation`` is true when every x0 and every x1 is used exactly once.
    """

    i: torch.Tensor
    j: torch.Tensor
    cost: float | None = None
    is_permutation: bool = False
    samples: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
    """The samples ``(x0, x1, cond)`` that ``i`` and ``j`` index when these are not the
    coupler's inputs: the batch gathered from every process (``scope = "global"``), the
    noise with a teacher's samples in place of the data (``reflow``), or the noise with the
    whole data set (``semidiscrete``: ``x1`` of shape (N, ...), ``cond`` its N labels).
    ``x0`` and ``x1`` may differ in length; ``cond`` belongs to ``x1``. ``None``: the
    inputs."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.i, self.j))

    def __len__(self) -> int:
        return 2

    def pairs(
        self, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The coupled training pairs ``(x0[i], x1[j], cond[j])`` from the tensors the coupler
        was given (or from ``samples`` when set). ``cond`` belongs to ``x1``."""
        if self.samples is not None:
            x0, x1, cond = self.samples
        return x0[self.i], x1[self.j], None if cond is None else cond[self.j]


@runtime_checkable
class Coupler(Protocol):
    """Chooses training pairs inside a minibatch of k noise and k data samples.

    ``x0`` and ``x1`` have shape (k, ...); the cost is computed on flattened samples. ``cond``
    holds optional per-sample conditions (the class labels of ``x1``). Returns one pair per
    noise sample. No gradient flows through a coupler.

    The core also accepts a coupler written more simply (``mfm_core.adapters``): one that
    takes only ``(x0, x1)`` (``cond`` is passed, by keyword, only when there are labels and
    the coupler takes it), and one that returns ``(i, j)`` instead of a ``Coupling``.

    Optional attribute ``draws_global_rng`` (read as true when absent): a coupler that sets
    it false draws nothing from torch's global random generator, so the trainer may couple
    the next batch in a background thread while the current one trains
    (``train.overlap_coupling = "auto"``); the pairs are the same either way.

    A coupler that needs the whole data set or keeps state across couplings also implements
    ``StatefulCoupler`` (``prepare``, ``state_dict``, ``load_state_dict``).
    """

    def __call__(
        self, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None = None
    ) -> Coupling: ...


@attrs.frozen(kw_only=True)
class PrepareContext:
    """What a stateful coupler is given once, before any coupling (``StatefulCoupler``).

    ``source`` and ``target``: the run's noise and training data sets (the whole training
    set, e.g. to fit one dual potential per data point). ``generator``: the coupler's own
    random stream, seeded from ``train.seed`` alike on every process, so that work done with
    it gives the same state on every rank of a torchrun job.
    """

    source: Dataset
    target: Dataset
    generator: torch.Generator


@runtime_checkable
class StatefulCoupler(Protocol):
    """A coupler that needs the whole data set, or keeps state between couplings.

    The runner calls ``prepare(context)`` once, when the run's components are built, before
    any coupling. ``state_dict()`` goes into every checkpoint and ``load_state_dict(state)``
    restores it when a run resumes (after ``prepare``), so a resumed run couples exactly as
    an uninterrupted one. ``state_dict`` returns tensors and plain Python values (what
    ``torch.save`` stores with ``weights_only``); every process holds the same state, and the
    main process's copy is saved.

    A coupler declares all three methods or none: the core's adapter
    (``mfm_core.adapters.CheckedCoupler``) gives a coupler without them the defaults of a
    stateless one (nothing to prepare, state ``{}``).
    """

    def prepare(self, context: PrepareContext) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@attrs.frozen(kw_only=True)
class PathSample:
    """A point on a conditional probability path and the velocity to regress onto.

    ``x_t`` and ``u_t`` have the shape of ``x0``; ``t`` has shape (batch,).
    """

    x0: torch.Tensor
    x1: torch.Tensor
    t: torch.Tensor
    x_t: torch.Tensor
    u_t: torch.Tensor


@runtime_checkable
class ProbPath(Protocol):
    """A conditional probability path between coupled samples:
    ``sample(x0, x1, t) -> PathSample`` (the core also accepts ``(x_t, u_t)``). Affine paths
    are built from a schedule (``mfm_core.paths.AffinePath``)."""

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample: ...


@runtime_checkable
class VectorFieldNet(Protocol):
    """A ``torch.nn.Module`` computing ``v(x, t, cond)`` with the shape of ``x``.

    ``x``: (batch, ...), ``t``: (batch,), ``cond``: optional per-sample condition. Factories
    of vector fields receive the runner's ``data_shape`` (the shape of one sample) as a keyword.
    """

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor: ...


@attrs.frozen(kw_only=True)
class SolveResult:
    """The end point of an ODE solve and what it cost.

    ``x1``: (batch, ...). ``nfe``: the number of field evaluations actually made.
    ``trajectory``: (len(times), batch, ...) when requested, else ``None``; ``times``: the
    matching times, shape (len(times),).
    """

    x1: torch.Tensor
    nfe: int
    trajectory: torch.Tensor | None = None
    times: torch.Tensor | None = None


@runtime_checkable
class Solver(Protocol):
    """Integrates ``dx/dt = field(x, t)`` from ``t=0`` to ``t=1`` starting at ``x0``.

    ``describe()`` returns the settings that identify the solver in reports, e.g.
    ``{"solver": "euler", "steps": 4}``. The core also accepts a solver that returns the end
    point alone (a tensor; it counts the field evaluations itself) and one without
    ``describe`` (its registered name and parameters are reported).
    """

    def __call__(
        self, field: Field, x0: torch.Tensor, *, return_trajectory: bool = False
    ) -> SolveResult: ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class Dataset(Protocol):
    """A source of samples: ``sample(n, generator)`` returns a tensor of shape (n, *shape).

    Sampling draws all randomness from ``generator`` so runs are reproducible; the tensor is
    float32 on the CPU (the runner moves batches to the training device).
    """

    shape: tuple[int, ...]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor: ...


@runtime_checkable
class PointSet(Protocol):
    """A finite ``Dataset`` whose samples are the rows of ``points`` (N, *shape), drawn
    uniformly (a points file). Couplers that need the whole data set read it from here."""

    shape: tuple[int, ...]
    points: torch.Tensor

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor: ...


@runtime_checkable
class IndexedDataset(Protocol):
    """A finite data set read by index (images): ``dataset[index] -> (sample, label)``.

    ``sample`` is float32 on the CPU with shape ``shape``, scaled to [-1, 1] for images;
    ``label`` is an int in ``[0, num_classes)``, or -1 when the data set has no labels
    (``num_classes is None``). ``hflip`` asks the runner for random horizontal flips (the
    runner applies them with its own generator, so runs stay reproducible). It is also a
    ``Dataset``: ``sample(n, generator)`` draws n random items, without labels.
    """

    shape: tuple[int, ...]
    num_classes: int | None
    hflip: bool

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor: ...


Generate = Callable[..., SolveResult]
"""``generate(solver, noise, labels=None, trajectory=False) -> SolveResult``: integrate
``noise`` (on the CPU) with ``solver`` and the evaluated model, in the evaluation's batches,
on its device; ``x1`` comes back on the CPU."""


@attrs.frozen(kw_only=True)
class EvalContext:
    """Everything a metric may look at for one solver setting.

    ``generated``: samples from the model, (n, ...), solved from ``noise`` (the source samples,
    same order) with ``solver``; ``solve`` is that solve's result (its NFE). ``reference``:
    held-out target samples, (n, ...), with their class ``reference_labels`` (or ``None``).
    ``labels``: the classes the samples were generated for (conditional models), else ``None``.
    ``field``: the model's velocity field for ``labels``; ``make_field(labels)`` builds it for
    other labels (``None``: unconditional). ``generate`` re-solves noise with any solver.

    ``source`` and ``target`` are the run's data sets, to draw more samples from; ``loss(g)``
    is the training loss on a fresh minibatch coupled by the run's coupler (differentiable
    with respect to ``model``'s parameters, batch drawn from generator ``g``). ``coupler``
    is that coupler as the trainer calls it (adapted, so it has ``state_dict`` and
    ``load_state_dict`` even when stateless), in its trained state; a metric that couples
    gives it back its ``state_dict()`` afterwards. ``coupling_batch``: the samples the
    trainer coupled at a time (per process). ``seed``: the
    evaluation seed; metrics derive their own randomness from it. ``cache``: a dict shared by
    every solver setting of one evaluation, for work that does not depend on the solver (keep
    keys prefixed with the metric's name).

    The fields after ``solve`` are filled in by the runner; code building a context by hand
    (tests, scripts) gives what its metrics need.
    """

    generated: torch.Tensor
    reference: torch.Tensor
    noise: torch.Tensor
    field: Field
    solve: SolveResult
    solver: Solver | None = None
    labels: torch.Tensor | None = None
    reference_labels: torch.Tensor | None = None
    make_field: Callable[[torch.Tensor | None], Field] | None = None
    generate: Generate | None = None
    model: torch.nn.Module | None = None
    source: Dataset | None = None
    target: Dataset | None = None
    loss: Callable[[torch.Generator], torch.Tensor] | None = None
    coupler: Coupler | None = None
    coupling_batch: int | None = None
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))
    seed: int = 0
    cache: dict[str, Any] = attrs.field(factory=dict)

    def need(self, *names: str) -> None:
        """Raise a ``ValueError`` naming the first of ``names`` the context lacks."""
        for name in names:
            if getattr(self, name) is None:
                raise ValueError(f"this metric needs EvalContext.{name}, which is not set")


@runtime_checkable
class Metric(Protocol):
    """Scores generated samples: ``metric(ctx) -> float`` (or a dict of named floats).

    A metric is computed for every solver setting of ``eval.solvers`` (the NFE sweep). A metric
    whose value does not depend on the solver (e.g. gradient variance) sets the class attribute
    ``per_solver = False``: it is computed once per evaluation, with the context of the first
    setting, and reported apart from the sweep.

    Optional class attributes and methods, which reports use: ``better`` (``"lower"``,
    ``"higher"`` or a phrase such as ``"closer to 1"``, shown as "(... better)"; a dict of
    them for a metric returning a dict) says which way is better;
    ``noise_floor(ctx) -> float`` is what a perfect model would score at this sample size
    (e.g. W2 between two draws of the data), shown beside the metric.
    """

    def __call__(self, ctx: EvalContext) -> float | dict[str, float]: ...


@runtime_checkable
class FeatureMap(Protocol):
    """Maps samples to feature vectors: ``features(x) -> (n, dim)`` float tensor on the CPU.

    ``x``: (n, ...) samples in the data's own scale (images in [-1, 1], channels first), on any
    device. ``dim``: the feature width D. Metrics such as ``fid`` and ``consistency`` take a
    feature map as their ``features`` parameter.
    """

    dim: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


TRACKER_PROVIDED = ("run_dir", "start_step")
"""The keywords mfm gives every tracker's factory; a config does not set them."""


@runtime_checkable
class Tracker(Protocol):
    """Receives what a run records, for an experiment tracker to show (TensorBoard, MLflow,
    W&B). Only the main process has trackers; they never see a tensor on a device, so feeding
    them costs a step no host synchronisation.

    The factory is called with the keywords ``run_dir`` (the run directory, a ``Path``) and
    ``start_step`` (0 for a new run; the step of the checkpoint a resumed run continues from),
    besides its own parameters. A tracker continues the tracker run it started in the same
    ``run_dir`` (remembering its id there if it has one) and, where the library allows,
    discards what it received after ``start_step``, which the resumed run records again.

    ``log_scalars(step, values)``: named floats at a training step, e.g. ``train/loss``,
    ``train/lr``, ``eval/euler-4/w2``. ``log_image(step, tag, image)``: an (H, W, 3) uint8
    array. ``close()``: flush and finish; nothing is logged after it. A tracker that raises is
    reported once and dropped; the run goes on.
    """

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None: ...

    def log_image(self, step: int, tag: str, image: Any) -> None: ...

    def close(self) -> None: ...
