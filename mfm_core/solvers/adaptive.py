"""The adaptive Dormand-Prince (dopri5) solver of torchdiffeq."""

from __future__ import annotations

from typing import Any

import torch
from torchdiffeq import odeint

from mfm_core.errors import SolverError
from mfm_core.protocols import Field, SolveResult


class Dopri5Solver:
    """Integrates ``dx/dt = field(x, t)`` on [0, 1] with adaptive steps to ``atol``/``rtol``.

    ``field`` gets ``x`` (batch, ...) and ``t`` (batch,) on ``x``'s device and dtype; the
    reported NFE counts the calls actually made, including rejected steps. A trajectory, when
    requested, is interpolated at ``trajectory_points`` evenly spaced times (which does not
    change the steps taken).

    Args:
        atol: the absolute error tolerance of the adaptive step-size control.
        rtol: the relative error tolerance of the adaptive step-size control.
        trajectory_points: the number of evenly spaced times a requested trajectory is interpolated
            at; it does not change the steps taken.
    """

    def __init__(
        self, *, atol: float = 1e-5, rtol: float = 1e-5, trajectory_points: int = 33
    ) -> None:
        if not atol > 0:
            raise ValueError(f"atol must be positive, got {atol!r}")
        if not rtol > 0:
            raise ValueError(f"rtol must be positive, got {rtol!r}")
        if trajectory_points < 2:
            raise ValueError(f"trajectory_points must be at least 2, got {trajectory_points!r}")
        self.atol = atol
        self.rtol = rtol
        self.trajectory_points = trajectory_points

    def __call__(
        self, field: Field, x0: torch.Tensor, *, return_trajectory: bool = False
    ) -> SolveResult:
        nfe = 0

        def func(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            nonlocal nfe
            nfe += 1
            return field(x, t.to(x.dtype).expand(x.shape[0]))

        points = self.trajectory_points if return_trajectory else 2
        times = torch.linspace(0.0, 1.0, points, dtype=x0.dtype, device=x0.device)
        try:
            xs = odeint(func, x0, times, method="dopri5", atol=self.atol, rtol=self.rtol)
        except AssertionError as exc:  # torchdiffeq's "underflow in dt": the step size vanished
            raise SolverError(
                f"dopri5 failed to integrate the learned field after {nfe} evaluations ({exc}); "
                "the field is ill-behaved (diverged training?): use a fixed-step solver, e.g. "
                'solver={name="euler", steps=100}'
            ) from None
        if not return_trajectory:
            return SolveResult(x1=xs[-1], nfe=nfe)
        return SolveResult(x1=xs[-1], nfe=nfe, trajectory=xs, times=times)

    def describe(self) -> dict[str, Any]:
        return {"solver": "dopri5", "atol": self.atol, "rtol": self.rtol}
