"""Explicit Runge-Kutta solvers with a fixed number of steps, one class per Butcher tableau."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import torch

from mfm_core.protocols import Field, SolveResult


@attrs.frozen
class ButcherTableau:
    """An explicit Runge-Kutta method with ``s`` stages.

    Stage ``n``: ``k_n = f(x + h sum_m a[n][m] k_m, t + c[n] h)`` (``a[n]`` has ``n`` entries);
    step: ``x + h sum_n b[n] k_n``.
    """

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]

    def __attrs_post_init__(self) -> None:
        stages = len(self.b)
        if len(self.c) != stages or [len(row) for row in self.a] != list(range(stages)):
            raise ValueError(
                "an explicit tableau with s stages needs s weights b, s nodes c and rows a[n] "
                "of n entries each"
            )

    @property
    def stages(self) -> int:
        return len(self.b)


EULER = ButcherTableau(a=((),), b=(1.0,), c=(0.0,))
MIDPOINT = ButcherTableau(a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5))
HEUN = ButcherTableau(a=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 1.0))
RK4 = ButcherTableau(
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    c=(0.0, 0.5, 0.5, 1.0),
)


def _combine(
    x: torch.Tensor, h: float, weights: Sequence[float], ks: Sequence[torch.Tensor]
) -> torch.Tensor:
    """``x + h sum_n weights[n] ks[n]``, skipping zero weights."""
    for weight, k in zip(weights, ks, strict=True):
        if weight:
            x = x + (h * weight) * k
    return x


class FixedStepSolver:
    """Integrates ``dx/dt = field(x, t)`` on [0, 1] with ``steps`` equal steps of ``tableau``.

    Uses exactly ``steps * stages`` field evaluations. ``field`` gets ``x`` (batch, ...) and
    ``t`` (batch,) on ``x``'s device and dtype. Gradients flow if the caller enables them.
    Subclasses set ``name`` and ``tableau``.

    Args:
        steps: the number of equal steps from t = 0 to t = 1.
    """

    name: ClassVar[str]
    tableau: ClassVar[ButcherTableau]

    def __init__(self, *, steps: int = 8) -> None:
        if steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.steps = steps

    def __call__(
        self, field: Field, x0: torch.Tensor, *, return_trajectory: bool = False
    ) -> SolveResult:
        h = 1.0 / self.steps
        x = x0
        trajectory = [x0]
        for step in range(self.steps):
            ks: list[torch.Tensor] = []
            for a_row, c in zip(self.tableau.a, self.tableau.c, strict=True):
                t = torch.full(
                    x0.shape[:1], (step + c) / self.steps, dtype=x0.dtype, device=x0.device
                )
                ks.append(field(_combine(x, h, a_row, ks), t))
            x = _combine(x, h, self.tableau.b, ks)
            if return_trajectory:
                trajectory.append(x)
        nfe = self.steps * self.tableau.stages
        if not return_trajectory:
            return SolveResult(x1=x, nfe=nfe)
        times = torch.linspace(0.0, 1.0, self.steps + 1, dtype=x0.dtype, device=x0.device)
        return SolveResult(x1=x, nfe=nfe, trajectory=torch.stack(trajectory), times=times)

    def describe(self) -> dict[str, Any]:
        return {"solver": self.name, "steps": self.steps}


class EulerSolver(FixedStepSolver):
    """Forward Euler: one evaluation per step, first order."""

    name = "euler"
    tableau = EULER


class MidpointSolver(FixedStepSolver):
    """Explicit midpoint: two evaluations per step, second order."""

    name = "midpoint"
    tableau = MIDPOINT


class HeunSolver(FixedStepSolver):
    """Heun's trapezoidal method: two evaluations per step, second order."""

    name = "heun"
    tableau = HEUN


class RK4Solver(FixedStepSolver):
    """The classic fourth-order Runge-Kutta method: four evaluations per step."""

    name = "rk4"
    tableau = RK4
