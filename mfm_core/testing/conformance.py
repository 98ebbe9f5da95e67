"""Conformance checks for plugin authors: ``check_coupler(coupler)`` in your own tests, and
``check_stateful_coupler(make_coupler, context)`` for a ``StatefulCoupler``.

Every built-in coupler passes these checks, and so should a third-party one::

    from mfm_core import check_coupler

    def test_my_coupler_conforms():
        check_coupler(MyCoupler(), device="cuda" if torch.cuda.is_available() else "cpu")

A failed check raises ``AssertionError`` saying which rule was broken.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mfm_core.adapters import CheckedCoupler, adapt
from mfm_core.errors import PluginError
from mfm_core.protocols import Coupler, Coupling, PrepareContext, StatefulCoupler

__all__ = ["check_coupler", "check_stateful_coupler"]

DEFAULT_SHAPES = ((2,), (3, 4, 4))
STATEFUL = "check_stateful_coupler"


def _fail(coupler: object, message: str, check: str = "check_coupler") -> None:
    name = getattr(coupler, "__name__", None) or type(coupler).__name__
    raise AssertionError(f"{check}({name}): {message}")


def _call(
    coupler: CheckedCoupler,
    what: str,
    x0: torch.Tensor,
    x1: torch.Tensor,
    cond: torch.Tensor | None = None,
) -> Coupling:
    """The coupling as the runner gets it; what the core's checks reject fails the check."""
    try:
        return coupler(x0, x1, cond)
    except PluginError as exc:
        _fail(coupler.inner, f"{what}: {exc}")
        raise  # unreachable: _fail raises


def _sources(
    coupling: Coupling, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The tensors the indices address: the coupler's inputs, or ``Coupling.samples``."""
    return coupling.samples if coupling.samples is not None else (x0, x1, cond)


def _same(a: Coupling, b: Coupling) -> bool:
    if not (torch.equal(a.i, b.i) and torch.equal(a.j, b.j)):
        return False
    if a.samples is None or b.samples is None:
        return a.samples is b.samples
    return all(
        (p is None and q is None) or (p is not None and q is not None and torch.equal(p, q))
        for p, q in zip(a.samples, b.samples, strict=True)
    )


def check_coupler(
    coupler: Coupler | Callable[..., object],
    *,
    k: int = 24,
    shapes: Sequence[tuple[int, ...]] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    num_classes: int = 3,
    context: PrepareContext | None = None,
) -> None:
    """Check that ``coupler`` follows the ``Coupler`` protocol; raise ``AssertionError`` if not.

    ``coupler`` is checked as the core calls it (``mfm_core.adapters``): it may also take
    only ``(x0, x1)`` and return ``(i, j)``. On batches of ``k`` samples of each shape in
    ``shapes`` (default: (2,) and (3, 4, 4)), on ``device``:

    - the checks the core makes of every coupling (``mfm_core.adapters.CheckedCoupler``):
      ``i`` and ``j`` hold one integer index per noise sample, within range of the samples
      they index; when it declares ``is_permutation``, every x0 and every x1 is used once;
    - no autograd leak: the indices do not require grad, the inputs (which do) get no
      gradient and are not modified;
    - determinism: the same ``torch.manual_seed`` gives the same pairs (a stateful coupler
      is given back its ``state_dict()`` from before the first call);
    - a batch of one sample is coupled with itself (with the one data sample, unless the
      coupling brings data of its own);
    - with class labels ``cond`` and ``within_class`` on (the default of pairing couplers),
      no pair crosses classes (the noise at position i keeps the label ``cond[i]``, and its
      partner's label is that of the data it indexes); label -1 is a class of its own;
    - ``Coupling.pairs`` returns ``x0[i]``, ``x1[j]``, ``cond[j]``;
    - a coupling that brings its own tensors (``Coupling.samples``, e.g. the teacher's
      samples of ``reflow``, the whole data set of ``semidiscrete``) brings ``(x0, x1,
      cond)`` of one sample shape (``cond`` one label per ``x1``), on the samples'
      device, requiring no grad, keeping the labels when given them (this is checked with
      labels even without ``within_class``); its indices address those tensors, and the
      determinism check compares them too;
    - batches of different sizes or sample shapes raise ``ValueError``.

    A ``StatefulCoupler`` couples only once prepared: give the ``context`` it is prepared
    with here (its samples then have the shape of ``context.target``, and its labels, if the
    target has classes, are the target's). Its state is checked by
    :func:`check_stateful_coupler`, which runs these checks too.
    """
    device = torch.device(device)
    coupler = adapt("coupler", coupler)
    raw = coupler.inner
    if isinstance(raw, StatefulCoupler):
        if context is None:
            _fail(
                raw,
                "is a StatefulCoupler: it couples only once prepared; pass "
                "context=PrepareContext(source=..., target=..., generator=...) to prepare it "
                "(or use check_stateful_coupler, which checks its state as well)",
            )
        _prepare(coupler, context, "check_coupler")
        shapes = shapes or (tuple(context.target.shape),)
        num_classes = getattr(context.target, "num_classes", None)
    shapes = shapes or DEFAULT_SHAPES
    generator = torch.Generator().manual_seed(seed)
    brings_samples = False
    for shape in shapes:
        what = f"k={k}, sample shape {shape}"
        x0 = torch.randn(k, *shape, generator=generator).to(device).requires_grad_()
        x1 = (torch.randn(k, *shape, generator=generator) + 1.0).to(device).requires_grad_()
        before = (x0.detach().clone(), x1.detach().clone())
        state = coupler.state_dict()
        torch.manual_seed(seed)
        first = _call(coupler, what, x0, x1)
        if x0.grad is not None or x1.grad is not None:
            _fail(raw, f"{what}: the inputs received gradients")
        if not (torch.equal(x0.detach(), before[0]) and torch.equal(x1.detach(), before[1])):
            _fail(raw, f"{what}: the coupler modified its inputs")
        coupler.load_state_dict(state)
        torch.manual_seed(seed)
        again = _call(coupler, what, x0, x1)
        if not _same(first, again):
            _fail(raw, f"{what}: two calls under the same torch.manual_seed (and state) differ")
        paired_x0, paired_x1, paired_cond = first.pairs(x0, x1)
        source_x0, source_x1, _ = _sources(first, x0, x1)
        if not (
            torch.equal(paired_x0, source_x0[first.i])
            and torch.equal(paired_x1, source_x1[first.j])
        ):
            _fail(raw, f"{what}: Coupling.pairs does not return (x0[i], x1[j])")
        if paired_cond is not None:
            _fail(raw, f"{what}: Coupling.pairs invented labels")
        brings_samples = brings_samples or first.samples is not None

    shape = shapes[0]
    one = (torch.randn(1, *shape).to(device), torch.randn(1, *shape).to(device))
    single = _call(coupler, "a batch of one sample", *one)
    own_data = single.samples is not None and len(single.samples[1]) != 1
    if not (single.i == 0).all() or not (own_data or (single.j == 0).all()):
        _fail(raw, "a batch of one sample must pair it with itself")

    within_class = getattr(raw, "within_class", False)
    if (within_class or brings_samples) and num_classes is not None:
        low = -1 if context is None else 0  # a prepared coupler's labels are its target's
        x0 = torch.randn(k, *shape, generator=generator).to(device)
        x1 = torch.randn(k, *shape, generator=generator).to(device)
        cond = torch.randint(low, num_classes, (k,), generator=generator).to(device)
        torch.manual_seed(seed)
        coupling = _call(coupler, "with labels", x0, x1, cond)
        source_x0, _, source_cond = _sources(coupling, x0, x1, cond)
        # The noise keeps its position's label when the coupling pairs the batch's own noise.
        own_noise = source_x0.shape == x0.shape and torch.equal(source_x0, x0)
        noise_cond = cond if own_noise else source_cond
        if within_class and not (noise_cond[coupling.i] == source_cond[coupling.j]).all():
            _fail(raw, "with within_class on, a pair crosses classes")
        _, _, paired_cond = coupling.pairs(x0, x1, cond)
        if paired_cond is None or not torch.equal(paired_cond, source_cond[coupling.j]):
            _fail(raw, "Coupling.pairs does not return the labels cond[j]")

    wider = (*shape[:-1], shape[-1] + 1)
    for x0, x1 in (
        (torch.randn(k, *shape), torch.randn(k + 1, *shape)),
        (torch.randn(k, *shape), torch.randn(k, *wider)),
    ):
        try:
            coupler(x0.to(device), x1.to(device))
        except ValueError:
            continue
        _fail(raw, f"shapes {tuple(x0.shape)} and {tuple(x1.shape)} were accepted")


def _prepare(coupler: CheckedCoupler, context: PrepareContext, check: str) -> None:
    """``prepare(context)``, a failure of which fails the check."""
    try:
        coupler.prepare(context)
    except Exception as exc:
        _fail(coupler.inner, f"prepare: prepare(context) raised {exc!r}", check)


def _alike(context: PrepareContext, state: torch.Tensor) -> PrepareContext:
    """A context equal to ``context``, with a generator of its own in ``state``."""
    generator = torch.Generator(context.generator.device)
    generator.set_state(state)
    return PrepareContext(source=context.source, target=context.target, generator=generator)


def check_stateful_coupler(
    make_coupler: Callable[[], object],
    context: PrepareContext,
    *,
    k: int = 24,
    batches: int = 3,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> None:
    """Check that the couplers ``make_coupler()`` builds keep the ``StatefulCoupler``
    promises; raise ``AssertionError`` naming the broken rule if not.

    ``context`` is what they are prepared with; each coupler gets an equal one (the same
    source and target, a generator in the state ``context.generator`` is in now). The
    batches: ``k`` samples of ``context.source`` and ``context.target`` (with labels when the
    target has classes), drawn from a generator seeded with ``seed``, on ``device``. Rules:

    - prepare: ``prepare(context)`` is accepted;
    - weights_only: ``state_dict()`` holds only what ``torch.save`` and
      ``torch.load(weights_only=True)`` round-trip (tensors, plain Python values), equal
      after the round trip;
    - resume: a fresh coupler, prepared alike and given the loaded state, couples the next
      ``batches`` exactly as the original (pairs, samples brought, cost), whether the state
      was saved before any coupling or after ``batches`` of them;
    - snapshot: what ``state_dict()`` returned does not change when the coupler couples
      afterwards (return copies, not live tensors);
    - alike: two couplers prepared alike hold the same state after the same couplings;
    - and, prepared with the context, the couplers conform to :func:`check_coupler`.
    """
    initial = context.generator.get_state()

    def prepared() -> CheckedCoupler:
        coupler = adapt("coupler", make_coupler())
        if not isinstance(coupler.inner, StatefulCoupler):
            _fail(
                coupler.inner,
                "is not a StatefulCoupler (prepare, state_dict, load_state_dict); check it "
                "with check_coupler",
                STATEFUL,
            )
        _prepare(coupler, _alike(context, initial), STATEFUL)
        return coupler

    prepared()  # a StatefulCoupler whose prepare is accepted, before anything else
    draws = torch.Generator().manual_seed(seed)
    classes = getattr(context.target, "num_classes", None)
    inputs = [
        (
            context.source.sample(k, draws).to(device),
            context.target.sample(k, draws).to(device),
            None if classes is None else torch.randint(classes, (k,), generator=draws),
        )
        for _ in range(2 * batches)
    ]
    inputs = [(x0, x1, None if c is None else c.to(device)) for x0, x1, c in inputs]
    for before in (0, batches):
        original = prepared()
        raw = original.inner
        for batch in inputs[:before]:
            original(*batch)
        state = original.state_dict()
        saved = _saved(raw, state, f"after {before} couplings")
        later = prepared()
        later.load_state_dict(_loaded(saved))
        for n, batch in enumerate(inputs[before : before + batches]):
            a, b = original(*batch), later(*batch)
            if not (_same(a, b) and a.cost == b.cost):
                _fail(
                    raw,
                    f"resume: a coupler loaded with the state saved after {before} couplings "
                    f"couples batch {n + 1} after it differently from the original (does "
                    "state_dict hold everything the couplings depend on, its generator's "
                    "state included?)",
                    STATEFUL,
                )
        if not _equal(_loaded(saved), _loaded(_saved(raw, state, "later"))):
            _fail(
                raw,
                f"snapshot: what state_dict() returned after {before} couplings changed when "
                "the coupler coupled afterwards; return copies, not live tensors or objects",
                STATEFUL,
            )
    twin = prepared()
    for batch in inputs[: 2 * batches]:
        twin(*batch)
    ours = _saved(raw, original.state_dict(), f"after {2 * batches} couplings")
    theirs = _saved(raw, twin.state_dict(), f"after {2 * batches} couplings")
    if not _equal(_loaded(ours), _loaded(theirs)):
        _fail(
            raw,
            f"alike: two couplers prepared alike hold different states after the same "
            f"{2 * batches} couplings (a time, an address or an unseeded draw in the state?)",
            STATEFUL,
        )
    check_coupler(make_coupler(), k=k, device=device, seed=seed, context=_alike(context, initial))


def _saved(coupler: object, state: dict[str, Any], when: str) -> bytes:
    """``state`` as ``torch.save`` writes it, checked to load back with ``weights_only``."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        data = buffer.getvalue()
        loaded = _loaded(data)
    except Exception as exc:
        _fail(
            coupler,
            f"weights_only: state_dict() ({when}) does not round-trip through torch.save and "
            f"torch.load(weights_only=True): {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0]}; keep it to tensors and plain Python values",
            STATEFUL,
        )
    if not _equal(state, loaded):
        _fail(coupler, f"weights_only: state_dict() ({when}) changes in the round trip", STATEFUL)
    return data


def _loaded(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


def _equal(a: Any, b: Any) -> bool:
    """Whether two states are equal: the same keys and types, tensors bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a.cpu(), b.cpu())
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return type(a) is type(b) and (a == b or (a != a and b != b))  # NaN equals NaN
