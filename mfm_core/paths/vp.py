"""The variance-preserving (VP) diffusion path, as a flow matching path (Lipman et al. 2023)."""

from __future__ import annotations

import math

import torch

from mfm_core.paths.affine import AffinePath, ScheduleValues
from mfm_core.schema import InvalidValue


class VPSchedule:
    """The VP schedule in mfm's time convention (t=0 noise, t=1 data), described at
    :class:`VPPath`; defined up to ``t_max = 1 - eps``."""

    def __init__(self, beta_min: float, beta_max: float, eps: float) -> None:
        self.beta_min = beta_min
        self.beta_max = beta_max
        self.t_max = 1.0 - eps

    def __call__(self, t: torch.Tensor) -> ScheduleValues:
        s = 1.0 - t.clamp(max=self.t_max)
        slope = self.beta_max - self.beta_min
        integral = s * self.beta_min + 0.5 * slope * s * s  # T(s)
        beta = self.beta_min + slope * s  # T'(s)
        a = torch.exp(-0.5 * integral)
        # 1 - a^2 = -expm1(-T): accurate near t = 1, where a^2 is close to 1.
        b = torch.sqrt(-torch.expm1(-integral))
        return ScheduleValues(
            alpha_t=a, sigma_t=b, d_alpha_t=0.5 * beta * a, d_sigma_t=-0.5 * beta * a * a / b
        )


class VPPath(AffinePath):
    """``x_t = a(t) x1 + b(t) x0`` with target ``u_t = a'(t) x1 + b'(t) x0``.

    The VP path of Lipman et al., "Flow Matching for Generative Modeling" (2023), in
    mfm's time convention (t=0 noise, t=1 data): ``a(t) = alpha_{1-t}``,
    ``alpha_s = exp(-T(s) / 2)``, ``T(s) = s beta_min + s^2 (beta_max - beta_min) / 2`` and
    ``b(t) = sqrt(1 - a(t)^2)``, so ``a^2 + b^2 = 1``. Differentiating, with
    ``beta(s) = T'(s) = beta_min + s (beta_max - beta_min)``::

        a'(t) = a(t) beta(1 - t) / 2
        b'(t) = -a(t)^2 beta(1 - t) / (2 b(t))

    The path assumes standard normal noise ``x0``. It does not quite start at the noise:
    ``a(0) = exp(-T(1) / 2)`` (0.0066 for the defaults). At t = 1 it reaches the data, but
    ``b'`` diverges there (``b(1) = 0``), so, as in that paper, time is clamped to at most
    ``1 - eps``: ``t`` above it is treated as ``1 - eps`` (``x_t``, ``u_t`` and the returned
    ``t`` alike). ``x0``, ``x1``: (batch, ...); ``t``: (batch,), broadcast over the sample
    dimensions.

    Args:
        beta_min: the noise rate beta at the data end of the diffusion (t = 1).
        beta_max: the noise rate beta at the noise end of the diffusion (t = 0).
        eps: the margin below t = 1 at which time is clamped, since the path's velocity diverges at
            t = 1.
    """

    def __init__(self, *, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-5) -> None:
        if not (math.isfinite(beta_min) and beta_min >= 0.0):
            raise InvalidValue("beta_min", f"must be a finite number >= 0, got {beta_min!r}")
        if not (math.isfinite(beta_max) and beta_max > 0.0 and beta_max >= beta_min):
            raise InvalidValue(
                "beta_max",
                f"must be finite, positive and >= beta_min ({beta_min!r}), got {beta_max!r}",
            )
        if not 0.0 < eps < 1.0:
            raise InvalidValue("eps", f"must be in (0, 1), got {eps!r}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.eps = float(eps)
        super().__init__(VPSchedule(self.beta_min, self.beta_max, self.eps))

    def coefficients(
        self, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``a, b, a', b'`` at ``min(t, 1 - eps)``, each with the shape of ``t``."""
        values = self.schedule(t)
        return values.alpha_t, values.sigma_t, values.d_alpha_t, values.d_sigma_t
