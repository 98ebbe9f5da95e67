"""Likelihood of held-out data under the flow, by the instantaneous change of variables: the
``nll`` and ``bpd`` metrics.

The model's flow ``dx/dt = v(x, t)`` carries the source density ``p0`` to ``p1`` with
``log p1(x1) = log p0(x0) - int_0^1 div v(x_t, t) dt``, where ``x_t`` is the trajectory through
``x1`` and ``x0`` its start. The metric integrates it backwards from the data with the row's
own solver, so the likelihood follows the NFE sweep like every other per-solver metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

from mfm_core.protocols import EvalContext, Field, Solver

PIXEL_BIN = 2 / 255
"""The width of one 8-bit quantisation bin after the pixel scaling ``x = p / 127.5 - 1``."""


def divergence(v: torch.Tensor, y: torch.Tensor, probes: torch.Tensor | None) -> torch.Tensor:
    """``div_y v`` per sample, (n,), for ``v = f(y)`` computed with ``y`` requiring grad.

    ``probes is None``: exact, one backward pass per dimension D (the trace of the Jacobian,
    row by row; the rows of all samples at once, so samples must not interact, as in any
    model in eval mode). Otherwise Hutchinson's estimator ``mean_k eps_k^T (dv/dy) eps_k``
    with ``probes`` (k, n, ...) shaped like ``y`` per probe: one vector-Jacobian product per
    probe. No graph is kept and no parameter ``.grad`` is touched.
    """
    if not v.requires_grad:  # the field does not depend on y (nor on anything trainable)
        return v.new_zeros(len(v))
    if probes is None:
        rows = v.flatten(1)
        dim = rows.shape[1]
        total = v.new_zeros(len(v))
        for i in range(dim):
            (grad,) = torch.autograd.grad(
                rows[:, i].sum(), y, retain_graph=i < dim - 1, materialize_grads=True
            )
            total = total + grad.flatten(1)[:, i]
        return total
    total = v.new_zeros(len(v))
    for k, eps in enumerate(probes):
        (vjp,) = torch.autograd.grad(
            v, y, eps, retain_graph=k < len(probes) - 1, materialize_grads=True
        )
        total = total + (vjp * eps).flatten(1).sum(1)
    return total / len(probes)


def log_likelihood(
    field: Field,
    x1: torch.Tensor,
    solver: Solver,
    log_prob0: Callable[[torch.Tensor], torch.Tensor],
    probes: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log p1(x1)``, (n,), for data ``x1`` (n, ...) under the flow of ``field``.

    In reversed time ``s = 1 - t`` the state ``y(s) = x(1 - s)`` obeys ``dy/ds = -v(y, 1 - s)``
    and the running integral ``I(s) = int_0^s div v(y, 1 - r) dr`` grows by the divergence;
    the solver integrates both, packed as one (n, D + 1) tensor, from ``y(0) = x1``, and
    ``log p1(x1) = log p0(y(1)) - I(1)``. ``probes`` as in ``divergence``, held fixed over
    the whole solve. Each field call builds and frees its own graph; the solver only sees
    detached tensors.
    """
    n, shape = len(x1), x1.shape[1:]

    def reversed_field(z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            y = z[:, :-1].reshape(n, *shape).detach().requires_grad_(True)
            v = field(y, 1 - s)
            div = divergence(v, y, probes)
        return torch.cat([-v.detach().flatten(1), div.detach()[:, None]], dim=1).to(z.dtype)

    with torch.no_grad():
        z0 = torch.cat([x1.flatten(1), x1.new_zeros(n, 1)], dim=1)
        z1 = solver(reversed_field, z0).x1
        return log_prob0(z1[:, :-1].reshape(x1.shape)) - z1[:, -1]


class NLLMetric:
    """The mean negative log-likelihood of ``ctx.reference`` under the model, in nats per
    sample (see ``log_likelihood``), integrated with the row's solver ``ctx.solver``.

    ``log p0`` is ``ctx.source.log_prob`` (the source must have a known density). The
    divergence is exact for samples of at most ``exact_max_dim`` values and Hutchinson's
    estimator above (``estimator`` forces either), with ``probes`` vectors per sample drawn
    once per solve, Rademacher or Gaussian (``probe_noise``). The first ``num_samples``
    reference samples are used, ``batch_size`` at a time (default: all at once).

    Image samples (n, C, H, W) of 8-bit pixels ``p`` scaled to ``x = p / 127.5 - 1`` are
    discrete, so their density is meaningless; ``dequantize`` (default: on for samples with
    three dimensions) adds uniform noise over each pixel's bin, ``x + (u - 1/2) 2 / 255`` with
    ``u ~ U[0, 1)^D``, and reports the NLL of the 8-bit image. In pixel units
    ``z = 127.5 (x + 1)`` every bin is a unit cube and ``p_z(z) = p_x(x) (2 / 255)^D``, so by
    Jensen ``-log P(p) = -log int_bin p_z <= E_u[-log p_x(x)] + D ln(255 / 2)``: the reported
    ``nll = nll_x + D ln(255 / 2)`` nats per image is an upper bound on the discrete NLL,
    tight when the density barely varies within a bin. Noise and probes come from a generator
    seeded with ``ctx.seed``, the same for every solver setting.

    Args:
        estimator: how the divergence is computed: "exact", "hutchinson", or "auto" to choose by the
            sample size.
        exact_max_dim: the largest sample size (values per sample) "auto" computes the divergence
            exactly for.
        probes: the number of Hutchinson probe vectors per sample.
        probe_noise: the distribution of the Hutchinson probes: "rademacher" or "gaussian".
        num_samples: how many reference samples the likelihood is averaged over.
        batch_size: how many samples are integrated at a time; unset, all at once.
        dequantize: whether 8-bit image samples get uniform dequantisation noise; unset, on for
            images.
    """

    better = "lower"

    def __init__(
        self,
        *,
        estimator: Literal["auto", "exact", "hutchinson"] = "auto",
        exact_max_dim: int = 16,
        probes: int = 1,
        probe_noise: Literal["rademacher", "gaussian"] = "rademacher",
        num_samples: int = 1000,
        batch_size: int | None = None,
        dequantize: bool | None = None,
    ) -> None:
        if estimator not in ("auto", "exact", "hutchinson"):
            raise ValueError(f"estimator must be auto, exact or hutchinson, got {estimator!r}")
        if probe_noise not in ("rademacher", "gaussian"):
            raise ValueError(f"probe_noise must be rademacher or gaussian, got {probe_noise!r}")
        if exact_max_dim < 0:
            raise ValueError(f"exact_max_dim must be non-negative, got {exact_max_dim!r}")
        for name, value in (("probes", probes), ("num_samples", num_samples)):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.estimator = estimator
        self.exact_max_dim = exact_max_dim
        self.probes = probes
        self.probe_noise = probe_noise
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.dequantize = dequantize

    def __call__(self, ctx: EvalContext) -> float:
        return self.nll(ctx)

    def nll(self, ctx: EvalContext) -> float:
        """The mean NLL in nats per sample (per 8-bit image when dequantizing)."""
        ctx.need("solver", "source")
        log_prob0 = getattr(ctx.source, "log_prob", None)
        if log_prob0 is None:
            raise ValueError(
                f"the likelihood metrics need a source with a known density (a log_prob(x) "
                f"method, like the 'gaussian' data set); {type(ctx.source).__name__} has none"
            )
        data = ctx.reference[: self.num_samples]
        labels = ctx.reference_labels
        shape = data.shape[1:]
        dim = math.prod(shape)
        dequantize = len(shape) == 3 if self.dequantize is None else self.dequantize
        exact = self.estimator == "exact" or (
            self.estimator == "auto" and dim <= self.exact_max_dim
        )
        generator = torch.Generator().manual_seed(ctx.seed)
        batch_size = self.batch_size or len(data)
        total = 0.0
        for start in range(0, len(data), batch_size):
            x = data[start : start + batch_size]
            if dequantize:
                noise = torch.rand(x.shape, generator=generator, dtype=x.dtype)
                x = x + (noise.to(x.device) - 0.5) * PIXEL_BIN
            probes = None if exact else self._draw_probes(x, generator).to(ctx.device)
            field = ctx.field
            if ctx.make_field is not None:
                part = None if labels is None else labels[start : start + batch_size]
                field = ctx.make_field(None if part is None else part.to(ctx.device))
            logp = log_likelihood(field, x.to(ctx.device), ctx.solver, log_prob0, probes)
            total -= logp.double().sum().item()
        nll = total / len(data)
        return nll + dim * math.log(1 / PIXEL_BIN) if dequantize else nll

    def _draw_probes(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shape = (self.probes, *x.shape)
        if self.probe_noise == "gaussian":
            return torch.randn(shape, generator=generator, dtype=x.dtype)
        return torch.randint(2, shape, generator=generator).to(x.dtype) * 2 - 1


class BPDMetric(NLLMetric):
    """Bits per dimension, ``nll / (D ln 2)`` with ``D`` the values per sample: for images
    (dequantized) the standard bits per 8-bit sub-pixel. Parameters as in ``NLLMetric``."""

    def __call__(self, ctx: EvalContext) -> float:
        dim = math.prod(ctx.reference.shape[1:])
        return self.nll(ctx) / (dim * math.log(2))
