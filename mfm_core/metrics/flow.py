"""Metrics of the learned flow itself, the quantities Multisample Flow Matching improves:
straightness, transport cost, gradient variance and consistency.

Each is evaluated for every solver setting of the NFE sweep except ``grad_variance``, which
does not depend on the solver.
"""

from __future__ import annotations

import logging
import math

import torch

from mfm_core.metrics.features import PixelFeatures
from mfm_core.metrics.w2 import w2_distance
from mfm_core.protocols import EvalContext, FeatureMap, Field
from mfm_core.schema import InvalidValue
from mfm_core.solvers.adaptive import Dopri5Solver

logger = logging.getLogger(__name__)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise InvalidValue(name, f"must be a positive integer, got {value!r}")


def _sum_sq(x: torch.Tensor) -> torch.Tensor:
    """Squared norm of each sample, summed over the sample dimensions: (n, ...) -> (n,)."""
    return x.double().pow(2).flatten(1).sum(1)


def _batched_field(
    field: Field, x: torch.Tensor, t: float, device: torch.device, batch: int
) -> torch.Tensor:
    """``field(x, t)`` for a CPU tensor ``x``, ``batch`` samples at a time, back on the CPU."""
    out = []
    for start in range(0, len(x), batch):
        part = x[start : start + batch].to(device)
        times = torch.full((len(part),), t, dtype=part.dtype, device=device)
        out.append(field(part, times).float().cpu())
    return torch.cat(out)


class Straightness:
    """``E_t E || v(x_t, t) - (x_1 - x_0) ||^2`` along the model's own trajectories.

    ``x_t`` is the trajectory the row's solver computes from noise ``x_0`` (its step points for
    a fixed-step solver, ``trajectory_points`` interpolated times for ``dopri5``) and ``x_1``
    its end point. The integral over t is the trapezoidal rule over those times. Zero for a
    perfectly straight flow; the adaptive row is the accurate value, the fixed-step rows say
    how straight the flow looks to that solver. Uses the first ``num_samples`` noise samples;
    the field is evaluated ``batch_size`` samples at a time.

    Args:
        num_samples: how many noise samples the trajectories start from.
        batch_size: how many samples the field is evaluated on at a time.
    """

    better = "lower"

    def __init__(self, *, num_samples: int = 1000, batch_size: int = 1000) -> None:
        _positive("num_samples", num_samples)
        _positive("batch_size", batch_size)
        self.num_samples = num_samples
        self.batch_size = batch_size

    def __call__(self, ctx: EvalContext) -> float:
        ctx.need("solver", "generate")
        n = min(self.num_samples, len(ctx.noise))
        labels = None if ctx.labels is None else ctx.labels[:n]
        field = ctx.field if ctx.make_field is None else ctx.make_field(labels)
        result = ctx.generate(ctx.solver, ctx.noise[:n], labels, trajectory=True)
        path = result.trajectory.float().cpu()
        times = result.times.double().cpu()
        chord = path[-1] - path[0]
        errors = torch.stack(
            [
                _sum_sq(
                    _batched_field(field, x, float(t), ctx.device, self.batch_size) - chord
                ).mean()
                for x, t in zip(path, times, strict=True)
            ]
        )
        return float(torch.trapezoid(errors, times))


class TransportCost:
    """``E || x0 - Phi(x0) ||^2`` of the learned map ``Phi`` (the row's solver), and its ratio
    to ``W2^2(q0, q1)``.

    ``W2^2`` is estimated once per evaluation by exact OT between ``ot_samples`` fresh source
    and target samples (O(n^3): 2000 points take seconds), averaged over ``repeats``
    independent draws: on the 2-D checkerboard one draw of 2000 points scatters by about 2 %.
    The ratio's floor is 1.0 for a map that reaches q1 (1: optimal transport), so closer to 1
    is better; a map that does not reach q1 (a coarse solver) can cost less, and a ratio below
    1 by more than twice the estimate's standard error is reported as a warning, since such a
    low cost is no merit. Returns ``cost``, ``ratio``, ``w2_squared`` and ``w2_squared_se``
    (the standard error of that mean; 0 with one draw).

    Args:
        ot_samples: how many fresh source and target samples the exact-OT estimate of W2^2 uses per
            draw.
        repeats: how many independent draws the W2^2 estimate averages over.
    """

    better = {"cost": "lower", "ratio": "closer to 1"}

    def __init__(self, *, ot_samples: int = 2000, repeats: int = 3) -> None:
        _positive("ot_samples", ot_samples)
        _positive("repeats", repeats)
        self.ot_samples = ot_samples
        self.repeats = repeats

    def w2_squared(self, ctx: EvalContext) -> tuple[float, float]:
        """The mean of the estimates of ``W2^2(q0, q1)`` and its standard error."""
        key = f"transport_cost.w2_squared.{self.ot_samples}.{self.repeats}"
        if key not in ctx.cache:
            ctx.need("source", "target")
            generator = torch.Generator().manual_seed(ctx.seed + 2)
            draws = []
            for _ in range(self.repeats):
                x0 = ctx.source.sample(self.ot_samples, generator)
                x1 = ctx.target.sample(self.ot_samples, generator)
                draws.append(w2_distance(x0, x1) ** 2)
            values = torch.tensor(draws, dtype=torch.float64)
            se = float(values.std() / math.sqrt(len(draws))) if len(draws) > 1 else 0.0
            ctx.cache[key] = (float(values.mean()), se)
        return ctx.cache[key]

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        cost = float(_sum_sq(ctx.generated.cpu() - ctx.noise.cpu()).mean())
        floor, se = self.w2_squared(ctx)
        ratio = cost / floor if floor > 0 else math.inf
        if floor > 0 and ratio < 1 - 2 * se / floor:
            logger.warning(
                f"warning: transport_cost.ratio {ratio:.3g} < 1 with {_solver_name(ctx)}: the "
                "map costs less than optimal transport because it does not reach the data; "
                "its cost is no merit"
            )
        return {"cost": cost, "ratio": ratio, "w2_squared": floor, "w2_squared_se": se}


def _solver_name(ctx: EvalContext) -> str:
    described = getattr(ctx.solver, "describe", None)
    if described is None:
        return "this solver"
    return " ".join(f"{k}={v}" for k, v in described().items())


class GradVariance:
    """Trace of the covariance of the loss gradient over ``batches`` fresh minibatches, at the
    evaluated parameters: ``sum_p Var_b[dL_b/dtheta_p]`` (unbiased, over batches).

    Each minibatch is drawn and coupled as in training (the run's coupler, the coupling batch
    size), with ``t`` drawn per pair, so the figure compares couplers on equal terms. The
    model is in eval mode (no dropout). Independent of the solver: computed once per
    evaluation.

    Streamed so that it fits beside training: Welford's update runs one parameter tensor at a
    time, keeping the running mean of the gradient in float32 (one value per parameter, on
    the parameters' device) and only the sum over parameters of Welford's ``M2`` (a float64
    scalar, since the metric is that sum); each tensor's update is computed in float64.

    Args:
        batches: how many fresh minibatches the gradient variance is estimated over.
    """

    better = "lower"

    per_solver = False

    def __init__(self, *, batches: int = 32) -> None:
        if batches < 2:
            raise InvalidValue("batches", f"must be at least 2, got {batches!r}")
        self.batches = batches

    def __call__(self, ctx: EvalContext) -> float:
        ctx.need("loss", "model")
        params = [p for p in ctx.model.parameters() if p.requires_grad]
        generator = torch.Generator().manual_seed(ctx.seed + 3)
        means: list[torch.Tensor] = []
        m2 = torch.zeros((), dtype=torch.float64, device=params[0].device)
        with torch.enable_grad():
            for count in range(1, self.batches + 1):
                loss = ctx.loss(generator)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                if count == 1:
                    means = [
                        torch.zeros_like(p, dtype=torch.float32) if g is None else g.float()
                        for g, p in zip(grads, params, strict=True)
                    ]
                    continue
                for mean, grad in zip(means, grads, strict=True):
                    x = torch.zeros_like(mean, dtype=torch.float64) if grad is None else grad
                    x = x.double()
                    delta = x - mean
                    updated = mean + delta / count
                    m2 += (delta * (x - updated)).sum()
                    mean.copy_(updated)
                del grads
        return float(m2 / (self.batches - 1))


class Consistency:
    """``(1/D) E || F(x^(m)) - F(x^(*)) ||^2``: how far the row's samples ``x^(m)`` are from
    an accurate solve ``x^(*)`` of the same noise, in the feature space of ``features`` (width
    D; default: the pixels or coordinates themselves).

    ``x^(*)`` is a ``dopri5`` solve at ``reference_atol``/``reference_rtol``, computed once per
    evaluation. The paper reports it for m-step ``midpoint`` solvers with the FID Inception
    features (``features = { name = "inception", weights = "..." }``).

    Args:
        features: the feature map the samples are compared in, a feature_map name or table;
            unset, the samples themselves.
        reference_atol: the absolute error tolerance of the accurate dopri5 reference solve.
        reference_rtol: the relative error tolerance of the accurate dopri5 reference solve.
    """

    better = "lower"

    def __init__(
        self,
        *,
        features: FeatureMap | None = None,
        reference_atol: float = 1e-5,
        reference_rtol: float = 1e-5,
    ) -> None:
        self.features = PixelFeatures() if features is None else features
        self.reference = Dopri5Solver(atol=reference_atol, rtol=reference_rtol)

    def _accurate(self, ctx: EvalContext) -> torch.Tensor:
        """The features of the accurate solve: solved once per evaluation and tolerance,
        mapped once per metric (two metrics may use different feature maps)."""
        key = f"consistency.reference.{self.reference.atol}.{self.reference.rtol}"
        if key not in ctx.cache:
            ctx.need("generate")
            ctx.cache[key] = ctx.generate(self.reference, ctx.noise, ctx.labels).x1
        # Keyed by the metric object itself: the cache holds it, so no other object can take
        # its place while the entry lives (an ``id()`` can be reused once its object is freed).
        mapped = ctx.cache.setdefault(f"{key}.features", {})
        if self not in mapped:
            mapped[self] = self.features(ctx.cache[key]).double()
        return mapped[self]

    def __call__(self, ctx: EvalContext) -> float:
        accurate = self._accurate(ctx)
        features = self.features(ctx.generated).double()
        return float(_sum_sq(features - accurate).mean() / features.shape[1])
