"""Affine conditional paths: ``x_t = alpha_t x1 + sigma_t x0``, defined by a schedule.

A new path is a new schedule: a callable giving ``alpha_t``, ``sigma_t`` and their time
derivatives. :class:`AffinePath` does the rest (shape checks, broadcasting, the target
velocity ``u_t = alpha'_t x1 + sigma'_t x0``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs
import torch

from mfm_core.protocols import PathSample


@attrs.frozen(kw_only=True)
class ScheduleValues:
    """``alpha_t``, ``sigma_t`` and their derivatives in ``t``, each shaped like ``t``."""

    alpha_t: torch.Tensor
    sigma_t: torch.Tensor
    d_alpha_t: torch.Tensor
    d_sigma_t: torch.Tensor


@runtime_checkable
class Schedule(Protocol):
    """``schedule(t) -> ScheduleValues`` for ``t``: (batch,). ``t_max`` (at most 1) is the
    latest time the schedule is defined at; :class:`AffinePath` clamps ``t`` to it."""

    t_max: float

    def __call__(self, t: torch.Tensor) -> ScheduleValues: ...


class AffinePath:
    """``x_t = alpha_t x1 + sigma_t x0`` with target ``u_t = dx_t/dt = alpha'_t x1 +
    sigma'_t x0``, for a :class:`Schedule`. ``x0``, ``x1``: (batch, ...); ``t``: (batch,),
    broadcast over the sample dimensions; ``t`` above ``schedule.t_max`` is treated as
    ``t_max`` (in ``x_t``, ``u_t`` and the returned ``t`` alike)."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        if x0.shape != x1.shape or t.shape != x0.shape[:1]:
            raise ValueError(
                "expected x0 and x1 of the same shape (batch, ...) and t of shape (batch,), got "
                f"{tuple(x0.shape)}, {tuple(x1.shape)} and {tuple(t.shape)}"
            )
        if self.schedule.t_max < 1.0:
            t = t.clamp(max=self.schedule.t_max)
        values = self.schedule(t)
        shape = (-1, *([1] * (x0.dim() - 1)))
        alpha, sigma, d_alpha, d_sigma = (
            v.reshape(shape)
            for v in (values.alpha_t, values.sigma_t, values.d_alpha_t, values.d_sigma_t)
        )
        return PathSample(
            x0=x0, x1=x1, t=t, x_t=sigma * x0 + alpha * x1, u_t=d_alpha * x1 + d_sigma * x0
        )
