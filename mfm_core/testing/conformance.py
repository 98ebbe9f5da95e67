"""Conformance checks for plugin authors: ``check_coupler(coupler)`` in your own tests.

Every built-in coupler passes these checks, and so should a third-party one::

    from mfm_core import check_coupler

    def test_my_coupler_conforms():
        check_coupler(MyCoupler(), device="cuda" if torch.cuda.is_available() else "cpu")

A failed check raises ``AssertionError`` saying which rule was broken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mfm_core.adapters import CheckedCoupler, adapt
from mfm_core.errors import PluginError
from mfm_core.protocols import Coupler, Coupling

__all__ = ["check_coupler"]


def _fail(coupler: object, message: str) -> None:
    name = getattr(coupler, "__name__", None) or type(coupler).__name__
    raise AssertionError(f"check_coupler({name}): {message}")


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
    shapes: Sequence[tuple[int, ...]] = ((2,), (3, 4, 4)),
    device: str | torch.device = "cpu",
    seed: int = 0,
    num_classes: int = 3,
) -> None:
    """Check that ``coupler`` follows the ``Coupler`` protocol; raise ``AssertionError`` if not.

    ``coupler`` is checked as the core calls it (``mfm_core.adapters``): it may also take
    only ``(x0, x1)`` and return ``(i, j)``. On batches of ``k`` samples of each shape in
    ``shapes``, on ``device``:

    - the checks the core makes of every coupling (``mfm_core.adapters.CheckedCoupler``):
      ``i`` and ``j`` hold one integer index per noise sample, within range of the samples
      they index; when it declares ``is_permutation``, every x0 and every x1 is used once;
    - no autograd leak: the indices do not require grad, the inputs (which do) get no
      gradient and are not modified;
    - determinism: the same ``torch.manual_seed`` gives the same pairs;
    - a batch of one sample is coupled with itself;
    - with class labels ``cond`` and ``within_class`` on (the default of pairing couplers),
      no pair crosses classes (``cond[i] == cond[j]``); label -1 is a class of its own;
    - ``Coupling.pairs`` returns ``x0[i]``, ``x1[j]``, ``cond[j]``;
    - a coupling that brings its own tensors (``Coupling.samples``, e.g. the teacher's
      samples of ``reflow``, the whole data set of ``semidiscrete``) brings ``(x0, x1,
      cond)`` of one sample shape (``cond`` one label per ``x1``), on the samples'
      device, requiring no grad, keeping the labels when given them (this is checked with
      labels even without ``within_class``); its indices address those tensors, and the
      determinism check compares them too;
    - batches of different sizes or sample shapes raise ``ValueError``.
    """
    device = torch.device(device)
    coupler = adapt("coupler", coupler)
    raw = coupler.inner
    generator = torch.Generator().manual_seed(seed)
    brings_samples = False
    for shape in shapes:
        what = f"k={k}, sample shape {shape}"
        x0 = torch.randn(k, *shape, generator=generator).to(device).requires_grad_()
        x1 = (torch.randn(k, *shape, generator=generator) + 1.0).to(device).requires_grad_()
        before = (x0.detach().clone(), x1.detach().clone())
        torch.manual_seed(seed)
        first = _call(coupler, what, x0, x1)
        if x0.grad is not None or x1.grad is not None:
            _fail(raw, f"{what}: the inputs received gradients")
        if not (torch.equal(x0.detach(), before[0]) and torch.equal(x1.detach(), before[1])):
            _fail(raw, f"{what}: the coupler modified its inputs")
        torch.manual_seed(seed)
        again = _call(coupler, what, x0, x1)
        if not _same(first, again):
            _fail(raw, f"{what}: two calls under the same torch.manual_seed differ")
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

    one = (torch.randn(1, 2).to(device), torch.randn(1, 2).to(device))
    single = _call(coupler, "a batch of one sample", *one)
    if not (single.i == 0).all() or not (single.j == 0).all():
        _fail(raw, "a batch of one sample must pair it with itself")

    within_class = getattr(raw, "within_class", False)
    if within_class or brings_samples:
        x0 = torch.randn(k, 2, generator=generator).to(device)
        x1 = torch.randn(k, 2, generator=generator).to(device)
        cond = torch.randint(-1, num_classes, (k,), generator=generator).to(device)
        torch.manual_seed(seed)
        coupling = _call(coupler, "with labels", x0, x1, cond)
        _, _, source_cond = _sources(coupling, x0, x1, cond)
        if within_class and not (source_cond[coupling.i] == source_cond[coupling.j]).all():
            _fail(raw, "with within_class on, a pair crosses classes")
        _, _, paired_cond = coupling.pairs(x0, x1, cond)
        if paired_cond is None or not torch.equal(paired_cond, source_cond[coupling.j]):
            _fail(raw, "Coupling.pairs does not return the labels cond[j]")

    for x0, x1 in (
        (torch.randn(k, 2), torch.randn(k + 1, 2)),
        (torch.randn(k, 2), torch.randn(k, 3)),
    ):
        try:
            coupler(x0.to(device), x1.to(device))
        except ValueError:
            continue
        _fail(raw, f"shapes {tuple(x0.shape)} and {tuple(x1.shape)} were accepted")
