"""The conditional optimal-transport path: straight lines from noise to data."""

from __future__ import annotations

import torch

from mfm_core.paths.affine import AffinePath, ScheduleValues


class CondOTSchedule:
    """``alpha_t = t``, ``sigma_t = 1 - (1 - s) t`` with ``s = sigma_min``."""

    t_max = 1.0

    def __init__(self, sigma_min: float = 0.0) -> None:
        self.sigma_min = float(sigma_min)

    def __call__(self, t: torch.Tensor) -> ScheduleValues:
        shrink = 1.0 - self.sigma_min
        return ScheduleValues(
            alpha_t=t,
            sigma_t=1.0 - shrink * t,
            d_alpha_t=torch.ones_like(t),
            d_sigma_t=torch.full_like(t, -shrink),
        )


class CondOTPath(AffinePath):
    """``x_t = (1 - (1 - s) t) x0 + t x1`` with target ``u_t = dx_t/dt = x1 - (1 - s) x0``.

    ``s = sigma_min``; ``s = 0`` (the paper's setting) gives ``x_t = (1 - t) x0 + t x1`` and
    ``u_t = x1 - x0``. ``x0``, ``x1``: (batch, ...); ``t``: (batch,), broadcast over the
    sample dimensions.

    Args:
        sigma_min: the noise left at t = 1, between 0 (the path ends exactly at the data) and 1.
    """

    def __init__(self, *, sigma_min: float = 0.0) -> None:
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"sigma_min must be in [0, 1), got {sigma_min!r}")
        super().__init__(CondOTSchedule(sigma_min))
        self.sigma_min = float(sigma_min)
