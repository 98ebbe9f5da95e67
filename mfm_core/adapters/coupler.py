"""The checked coupler: any coupler's call normalised, its inputs and result checked."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from mfm_core.adapters.base import (
    _POSITIONAL,
    _STATEFUL_METHODS,
    _Adapted,
    _parameters,
    ended_process,
)
from mfm_core.protocols import Coupling, PrepareContext


def check_inputs(x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None) -> None:
    """A coupler's inputs: k >= 1 samples of one shape on each side, one label per sample.
    Raises ``ValueError`` saying what does not fit."""
    if x0.dim() == 0 or x1.dim() == 0 or len(x0) != len(x1) or len(x0) == 0:
        raise ValueError(
            "x0 and x1 must hold the same positive number of samples, got shapes "
            f"{tuple(x0.shape)} and {tuple(x1.shape)}"
        )
    if x0.shape[1:] != x1.shape[1:]:
        raise ValueError(
            "x0 and x1 must have the same per-sample shape, got shapes "
            f"{tuple(x0.shape)} and {tuple(x1.shape)}"
        )
    if cond is not None and (cond.dim() != 1 or len(cond) != len(x1)):
        raise ValueError(
            f"cond must hold one label per sample, got shape {tuple(cond.shape)} "
            f"for {len(x1)} samples"
        )


class CheckedCoupler(_Adapted):
    """Any coupler, called as ``coupler(x0, x1, cond=None) -> Coupling`` with checked inputs
    and a checked, normalised result (see :meth:`__call__`)."""

    def __init__(self, inner: Any, label: str, name: str, params: dict[str, Any]) -> None:
        super().__init__(inner, label, name, params)
        if not callable(inner):
            raise self._fail(f"is a {type(inner).__name__}, not a callable coupler(x0, x1)")
        self._takes_cond = self._check_signature(_parameters(inner))
        self._stateful = self._check_stateful(inner)

    def _check_stateful(self, inner: Any) -> bool:
        """Whether ``inner`` is a ``StatefulCoupler``; declaring only some of its methods is
        an error (a state saved but never restored would break the exact resume)."""
        declared = [name for name in _STATEFUL_METHODS if callable(getattr(inner, name, None))]
        if declared and len(declared) < len(_STATEFUL_METHODS):
            missing = sorted(set(_STATEFUL_METHODS) - set(declared))
            raise self._fail(
                f"declares {', '.join(declared)} but not {', '.join(missing)}; a stateful "
                "coupler implements prepare, state_dict and load_state_dict together"
            )
        return bool(declared)

    def prepare(self, context: PrepareContext) -> None:
        """The coupler's ``prepare``; nothing for a stateless coupler."""
        if self._stateful:
            self.inner.prepare(context)

    def state_dict(self) -> dict[str, Any]:
        """The coupler's state for a checkpoint; ``{}`` for a stateless coupler."""
        return self.inner.state_dict() if self._stateful else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned; a stateless coupler accepts only ``{}``."""
        if self._stateful:
            self.inner.load_state_dict(state)
        elif state:
            raise self._fail(
                f"is stateless but was given a saved state with keys {sorted(state)}; resume "
                "with the coupler the run was trained with"
            )

    def _check_signature(self, parameters: list[inspect.Parameter] | None) -> bool:
        if parameters is None:
            return True
        kinds = {p.kind for p in parameters}
        if any(p.name == "cond" and p.kind != p.POSITIONAL_ONLY for p in parameters):
            return True
        if inspect.Parameter.VAR_KEYWORD in kinds:
            return True
        positional = [p for p in parameters if p.kind in _POSITIONAL]
        if len(positional) < 2 and inspect.Parameter.VAR_POSITIONAL not in kinds:
            raise self._fail("cannot be called as coupler(x0, x1)")
        required = [
            p
            for p in parameters[2:]
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            raise self._fail(
                f"requires a parameter '{required[0].name}'; a coupler is called as "
                "coupler(x0, x1) or coupler(x0, x1, cond=labels)"
            )
        return False

    def __call__(
        self, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None = None
    ) -> Coupling:
        """Couple ``x0`` and ``x1`` (k, ...); ``cond`` (k,) are the labels of ``x1``.

        The result holds one pair per noise sample: ``i`` and ``j`` are LongTensors of
        length k on the device of ``x0``, within range of the samples they index (the inputs,
        or ``Coupling.samples``), each index used once when the coupling declares a
        permutation. A coupler's ``(i, j)`` (tensors, arrays or lists of integers) becomes a
        ``Coupling`` whose ``is_permutation`` is the coupler's attribute of that name.
        """
        check_inputs(x0, x1, cond)
        try:
            if cond is not None and self._takes_cond:
                result = self.inner(x0, x1, cond=cond)
            else:
                result = self.inner(x0, x1)
        except SystemExit as exc:  # never the user's: a coupler must not end the process
            raise self._fail(ended_process(exc)) from None
        return self._normalise(result, x0, cond)

    def _index(self, value: Any, name: str, device: torch.device) -> torch.Tensor:
        if isinstance(value, (np.ndarray, list, tuple)):
            value = torch.as_tensor(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise self._fail(f"returned {name} as a {type(value).__name__}, not a tensor")
        if (
            value.dtype in (torch.bool, torch.uint8)
            or value.is_floating_point()
            or value.is_complex()
        ):
            raise self._fail(f"returned {name} of dtype {value.dtype}; indices are integers")
        if value.dim() != 1:
            raise self._fail(f"returned {name} of shape {tuple(value.shape)}; expected (k,)")
        return value.to(device=device, dtype=torch.long)

    def _normalise(self, result: Any, x0: torch.Tensor, cond: torch.Tensor | None) -> Coupling:
        if isinstance(result, Coupling):
            coupling = result
        elif isinstance(result, tuple) and len(result) == 2:
            coupling = Coupling(
                i=result[0],
                j=result[1],
                is_permutation=bool(getattr(self.inner, "is_permutation", False)),
            )
        else:
            raise self._fail(
                f"returned a {type(result).__name__}; expected a Coupling or a pair (i, j)"
            )
        k, device = len(x0), x0.device
        i = self._index(coupling.i, "i", device)
        j = self._index(coupling.j, "j", device)
        if len(i) != k or len(j) != k:
            raise self._fail(
                f"returned {len(i)} and {len(j)} indices (i and j) for {k} samples; the "
                "runner needs one pair per noise sample"
            )
        n0, n1 = (
            (k, k) if coupling.samples is None else self._check_samples(coupling.samples, x0, cond)
        )
        self._check_indices(i, j, n0, n1, coupling.is_permutation)
        cost = coupling.cost
        if isinstance(cost, torch.Tensor) and cost.numel() == 1:
            cost = cost.item()
        if cost is not None and not isinstance(cost, (int, float)):
            raise self._fail(f"returned a cost of type {type(cost).__name__}; expected a float")
        return Coupling(
            i=i,
            j=j,
            cost=None if cost is None else float(cost),
            is_permutation=coupling.is_permutation,
            samples=coupling.samples,
        )

    def _check_samples(
        self, samples: Any, x0: torch.Tensor, cond: torch.Tensor | None
    ) -> tuple[int, int]:
        """Check the samples a coupling brings (``Coupling.samples``); return the counts of
        its ``x0`` and ``x1``."""
        if not isinstance(samples, tuple) or len(samples) != 3:
            raise self._fail("returned Coupling.samples that is not a tuple (x0, x1, cond)")
        s0, s1, s_cond = samples
        for what, tensor in (("x0", s0), ("x1", s1), ("cond", s_cond)):
            if tensor is None and what == "cond":
                continue
            if not isinstance(tensor, torch.Tensor):
                raise self._fail(f"returned Coupling.samples whose {what} is not a tensor")
            if tensor.device != x0.device:
                raise self._fail(
                    f"returned Coupling.samples whose {what} is on {tensor.device}, the batch "
                    f"on {x0.device}"
                )
            if tensor.requires_grad:
                raise self._fail(
                    f"returned Coupling.samples whose {what} requires grad (autograd leaks "
                    "through the coupler)"
                )
        if s0.shape[1:] != x0.shape[1:] or s1.shape[1:] != x0.shape[1:]:
            raise self._fail(
                f"returned Coupling.samples x0 and x1 of shapes {tuple(s0.shape)} and "
                f"{tuple(s1.shape)}; both must be samples of the same shape as the batch's"
            )
        if cond is not None and s_cond is None:
            raise self._fail("was given labels but its Coupling.samples dropped them (cond)")
        if s_cond is not None and s_cond.shape != s1.shape[:1]:
            raise self._fail("returned Coupling.samples whose cond is not one label per x1")
        return len(s0), len(s1)

    def _check_indices(
        self, i: torch.Tensor, j: torch.Tensor, n0: int, n1: int, permutation: bool
    ) -> None:
        """Range (and uniqueness for a permutation) of the indices into ``n0`` noise and
        ``n1`` data samples, computed on their device and read with one synchronisation."""
        checks = [i.min() >= 0, i.max() < n0, j.min() >= 0, j.max() < n1]
        if permutation:  # every index at most once (so exactly once when there are n pairs)
            for index, n in ((i, n0), (j, n1)):
                checks.append(torch.bincount(index.clamp(0, n - 1), minlength=n).max() <= 1)
        ok = torch.stack(checks).tolist()
        for name, n, low, high in (("i", n0, ok[0], ok[1]), ("j", n1, ok[2], ok[3])):
            if not (low and high):
                raise self._fail(f"returned {name} with indices outside [0, {n})")
        if permutation and not all(ok[4:]):
            twice = "i" if not ok[4] else "j"
            raise self._fail(
                f"declares a permutation (is_permutation), but {twice} uses an index twice"
            )
