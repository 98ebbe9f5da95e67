"""The conditional optimal-transport path: straight lines from noise to data."""

from __future__ import annotations

import torch

from mfm_core.protocols import PathSample


class CondOTPath:
    """``x_t = (1 - (1 - s) t) x0 + t x1`` with target ``u_t = dx_t/dt = x1 - (1 - s) x0``.

    ``s = sigma_min``; ``s = 0`` (the paper's setting) gives ``x_t = (1 - t) x0 + t x1`` and
    ``u_t = x1 - x0``. ``x0``, ``x1``: (batch, ...); ``t``: (batch,), broadcast over the
    sample dimensions.
    """

    def __init__(self, *, sigma_min: float = 0.0) -> None:
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"sigma_min must be in [0, 1), got {sigma_min!r}")
        self.sigma_min = float(sigma_min)

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        if x0.shape != x1.shape or t.shape != x0.shape[:1]:
            raise ValueError(
                "expected x0 and x1 of the same shape (batch, ...) and t of shape (batch,), got "
                f"{tuple(x0.shape)}, {tuple(x1.shape)} and {tuple(t.shape)}"
            )
        shrink = 1.0 - self.sigma_min
        t_b = t.reshape(-1, *([1] * (x0.dim() - 1)))
        x_t = (1.0 - shrink * t_b) * x0 + t_b * x1
        return PathSample(x0=x0, x1=x1, t=t, x_t=x_t, u_t=x1 - shrink * x0)
