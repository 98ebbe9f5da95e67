"""Conformance checks for plugin authors: ``check_coupler(coupler)`` in your own tests.

Every built-in coupler passes these checks, and so should a third-party one::

    from mfm_core.testing import check_coupler

    def test_my_coupler_conforms():
        check_coupler(MyCoupler(), device="cuda" if torch.cuda.is_available() else "cpu")

A failed check raises ``AssertionError`` saying which rule was broken.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mfm_core.protocols import Coupler, Coupling

__all__ = ["check_coupler"]


def _fail(coupler: object, message: str) -> None:
    raise AssertionError(f"check_coupler({type(coupler).__name__}): {message}")


def _check_result(
    coupler: Coupler, coupling: object, k: int, device: torch.device, what: str
) -> Coupling:
    if not isinstance(coupling, Coupling):
        _fail(coupler, f"{what}: returned {type(coupling).__name__}, expected a Coupling")
    if coupling.gathered is not None:
        k = _check_gathered(coupler, coupling.gathered, device, what)
    i, j = coupling.i, coupling.j
    for name, index in (("i", i), ("j", j)):
        if not isinstance(index, torch.Tensor) or index.dtype != torch.long or index.dim() != 1:
            _fail(coupler, f"{what}: {name} must be a 1-D LongTensor, got {index!r:.80}")
        if index.device != device:
            _fail(coupler, f"{what}: {name} is on {index.device}, the samples on {device}")
        if index.requires_grad:
            _fail(coupler, f"{what}: {name} requires grad (autograd leaks through the coupler)")
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= k):
            _fail(coupler, f"{what}: {name} holds indices outside [0, {k})")
    if len(i) != len(j):
        _fail(coupler, f"{what}: i and j have different lengths ({len(i)} and {len(j)})")
    if len(i) == 0:
        _fail(coupler, f"{what}: returned no pairs")
    if coupling.is_permutation:
        expected = torch.arange(k, device=device)
        if len(i) != k or not (i.sort().values == expected).all():
            _fail(coupler, f"{what}: declares a permutation, but not every x0 is used once")
        if not (j.sort().values == expected).all():
            _fail(coupler, f"{what}: declares a permutation, but not every x1 is used once")
    if coupling.cost is not None and not isinstance(coupling.cost, float):
        _fail(coupler, f"{what}: cost must be a float or None, got {type(coupling.cost).__name__}")
    return coupling


def _check_gathered(coupler: Coupler, gathered: object, device: torch.device, what: str) -> int:
    """Check the tensors a coupling brings along (``Coupling.gathered``); return how many
    samples its indices may address."""
    if not isinstance(gathered, tuple) or len(gathered) != 3:
        _fail(coupler, f"{what}: gathered must be a tuple (x0, x1, cond), got {gathered!r:.80}")
    x0, x1, cond = gathered
    for name, tensor in (("x0", x0), ("x1", x1), ("cond", cond)):
        if tensor is None and name == "cond":
            continue
        if not isinstance(tensor, torch.Tensor):
            _fail(coupler, f"{what}: gathered {name} must be a tensor, got {tensor!r:.80}")
        if tensor.device != device:
            _fail(coupler, f"{what}: gathered {name} is on {tensor.device}, not on {device}")
        if tensor.requires_grad:
            _fail(coupler, f"{what}: gathered {name} requires grad (autograd leaks through)")
    if x0.dim() == 0 or x0.shape != x1.shape:
        _fail(
            coupler,
            f"{what}: gathered x0 and x1 must be samples of the same shape, got "
            f"{tuple(x0.shape)} and {tuple(x1.shape)}",
        )
    if cond is not None and cond.shape != x1.shape[:1]:
        _fail(coupler, f"{what}: gathered cond must hold one label per gathered sample")
    return len(x0)


def _sources(
    coupling: Coupling, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The tensors the indices address: the coupler's inputs, or the gathered ones."""
    return coupling.gathered if coupling.gathered is not None else (x0, x1, cond)


def _same(a: Coupling, b: Coupling) -> bool:
    if not (torch.equal(a.i, b.i) and torch.equal(a.j, b.j)):
        return False
    if a.gathered is None or b.gathered is None:
        return a.gathered is b.gathered
    return all(
        (p is None and q is None) or (p is not None and q is not None and torch.equal(p, q))
        for p, q in zip(a.gathered, b.gathered, strict=True)
    )


def check_coupler(
    coupler: Coupler,
    *,
    k: int = 24,
    shapes: Sequence[tuple[int, ...]] = ((2,), (3, 4, 4)),
    device: str | torch.device = "cpu",
    seed: int = 0,
    num_classes: int = 3,
) -> None:
    """Check that ``coupler`` follows the ``Coupler`` protocol; raise ``AssertionError`` if not.

    On batches of ``k`` samples of each shape in ``shapes``, on ``device``:

    - the result is a ``Coupling`` whose ``i`` and ``j`` are 1-D LongTensors of equal,
      non-zero length, on the samples' device, with indices in ``[0, k)``;
    - when it declares ``is_permutation``, every x0 and every x1 is used exactly once;
    - no autograd leak: the indices do not require grad, the inputs (which do) get no
      gradient and are not modified;
    - determinism: the same ``torch.manual_seed`` gives the same pairs;
    - a batch of one sample is coupled with itself;
    - with class labels ``cond`` and ``within_class`` on (the default of pairing couplers),
      no pair crosses classes (``cond[i] == cond[j]``); label -1 is a class of its own;
    - ``Coupling.pairs`` returns ``x0[i]``, ``x1[j]``, ``cond[j]``;
    - a coupling that brings its own tensors (``Coupling.gathered``, e.g. the teacher's
      samples of ``reflow``) brings ``(x0, x1, cond)`` of equal lengths, on the samples'
      device, requiring no grad, keeping the labels when given them (this is checked with
      labels even without ``within_class``); its indices address those tensors, and the
      determinism check compares them too;
    - batches of different sizes or sample shapes raise ``ValueError``.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    gathers = False
    for shape in shapes:
        what = f"k={k}, sample shape {shape}"
        x0 = torch.randn(k, *shape, generator=generator).to(device).requires_grad_()
        x1 = (torch.randn(k, *shape, generator=generator) + 1.0).to(device).requires_grad_()
        before = (x0.detach().clone(), x1.detach().clone())
        torch.manual_seed(seed)
        first = _check_result(coupler, coupler(x0, x1), k, device, what)
        if x0.grad is not None or x1.grad is not None:
            _fail(coupler, f"{what}: the inputs received gradients")
        if not (torch.equal(x0.detach(), before[0]) and torch.equal(x1.detach(), before[1])):
            _fail(coupler, f"{what}: the coupler modified its inputs")
        torch.manual_seed(seed)
        again = coupler(x0, x1)
        if not _same(first, again):
            _fail(coupler, f"{what}: two calls under the same torch.manual_seed differ")
        paired_x0, paired_x1, paired_cond = first.pairs(x0, x1)
        source_x0, source_x1, _ = _sources(first, x0, x1)
        if not (
            torch.equal(paired_x0, source_x0[first.i])
            and torch.equal(paired_x1, source_x1[first.j])
        ):
            _fail(coupler, f"{what}: Coupling.pairs does not return (x0[i], x1[j])")
        if paired_cond is not None:
            _fail(coupler, f"{what}: Coupling.pairs invented labels")
        gathers = gathers or first.gathered is not None

    single = _check_result(
        coupler,
        coupler(torch.randn(1, 2).to(device), torch.randn(1, 2).to(device)),
        1,
        device,
        "a batch of one sample",
    )
    if not (single.i == 0).all() or not (single.j == 0).all():
        _fail(coupler, "a batch of one sample must pair it with itself")

    within_class = getattr(coupler, "within_class", False)
    if within_class or gathers:
        x0 = torch.randn(k, 2, generator=generator).to(device)
        x1 = torch.randn(k, 2, generator=generator).to(device)
        cond = torch.randint(-1, num_classes, (k,), generator=generator).to(device)
        torch.manual_seed(seed)
        coupling = _check_result(coupler, coupler(x0, x1, cond), k, device, "with labels")
        _, _, source_cond = _sources(coupling, x0, x1, cond)
        if source_cond is None:
            _fail(coupler, "with labels, the gathered tensors dropped them (cond is None)")
        if within_class and not (source_cond[coupling.i] == source_cond[coupling.j]).all():
            _fail(coupler, "with within_class on, a pair crosses classes")
        _, _, paired_cond = coupling.pairs(x0, x1, cond)
        if paired_cond is None or not torch.equal(paired_cond, source_cond[coupling.j]):
            _fail(coupler, "Coupling.pairs does not return the labels cond[j]")

    for x0, x1 in (
        (torch.randn(k, 2), torch.randn(k + 1, 2)),
        (torch.randn(k, 2), torch.randn(k, 3)),
    ):
        try:
            coupler(x0.to(device), x1.to(device))
        except ValueError:
            continue
        _fail(coupler, f"shapes {tuple(x0.shape)} and {tuple(x1.shape)} were accepted")
