"""The checked solver and path: their results normalised and checked."""

from __future__ import annotations

from typing import Any

import torch

from mfm_core.adapters.base import _Adapted, _parameters
from mfm_core.protocols import Field, PathSample, SolveResult


class CheckedSolver(_Adapted):
    """Any solver, called as ``solver(field, x0, *, return_trajectory=False) -> SolveResult``
    with ``describe()``."""

    def __init__(self, inner: Any, label: str, name: str, params: dict[str, Any]) -> None:
        super().__init__(inner, label, name, params)
        if not callable(inner):
            raise self._fail(f"is a {type(inner).__name__}, not a callable solver(field, x0)")
        parameters = _parameters(inner)
        self._takes_trajectory = parameters is None or any(
            p.name == "return_trajectory" or p.kind == p.VAR_KEYWORD for p in parameters
        )

    def __call__(
        self, field: Field, x0: torch.Tensor, *, return_trajectory: bool = False
    ) -> SolveResult:
        if return_trajectory and not self._takes_trajectory:
            raise self._fail("cannot return a trajectory (it takes no return_trajectory)")
        evaluations = 0

        def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
            nonlocal evaluations
            evaluations += 1
            return field(*args, **kwargs)

        if return_trajectory:
            result = self.inner(counted, x0, return_trajectory=True)
        else:
            result = self.inner(counted, x0)
        if isinstance(result, torch.Tensor):
            result = SolveResult(x1=result, nfe=evaluations)
        if not isinstance(result, SolveResult):
            raise self._fail(
                f"returned a {type(result).__name__}; expected a SolveResult or a tensor"
            )
        if result.x1.shape != x0.shape:
            raise self._fail(
                f"returned x1 of shape {tuple(result.x1.shape)} for x0 of {tuple(x0.shape)}"
            )
        if return_trajectory and result.trajectory is None:
            raise self._fail("was asked for a trajectory and returned none")
        return result

    def describe(self) -> dict[str, Any]:
        """The solver's own ``describe()``, else its registered name and parameters."""
        describe = getattr(self.inner, "describe", None)
        if describe is not None:
            return describe()
        return {"solver": self._name, **self._params}


class CheckedPath(_Adapted):
    """Any path, sampled as ``path.sample(x0, x1, t) -> PathSample``."""

    def __init__(self, inner: Any, label: str, name: str, params: dict[str, Any]) -> None:
        super().__init__(inner, label, name, params)
        if not callable(getattr(inner, "sample", None)):
            raise self._fail("has no method sample(x0, x1, t)")

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        result = self.inner.sample(x0, x1, t)
        if isinstance(result, tuple) and len(result) == 2:
            result = PathSample(x0=x0, x1=x1, t=t, x_t=result[0], u_t=result[1])
        if not isinstance(result, PathSample):
            raise self._fail(
                f"returned a {type(result).__name__} from sample; expected a PathSample or "
                "(x_t, u_t)"
            )
        for what, tensor in (("x_t", result.x_t), ("u_t", result.u_t)):
            if not isinstance(tensor, torch.Tensor) or tensor.shape != x0.shape:
                shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else tensor
                raise self._fail(f"returned {what} of shape {shape} for x0 of {tuple(x0.shape)}")
        return result
