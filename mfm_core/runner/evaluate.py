"""After training: the final loss, then samples and metrics for every solver setting."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from mfm_core.config import EvalConfig
from mfm_core.protocols import EvalContext, Field, Solver, SolveResult
from mfm_core.runner.pipeline import Pipeline
from mfm_core.runner.train import draw_batch, flow_matching_loss


def model_field(model: torch.nn.Module) -> Field:
    """The model as a field ``v(x, t)`` for solvers."""
    return lambda x, t: model(x, t)


@torch.no_grad()
def final_loss(
    pipeline: Pipeline,
    model: torch.nn.Module,
    batch_size: int,
    batches: int,
    generator: torch.Generator,
    device: torch.device,
) -> float:
    """The training objective at the final weights, averaged over fresh minibatches: the
    paper's "final loss value", an estimate of the variance of the coupled target field."""
    total = 0.0
    for _ in range(batches):
        x0, x1 = draw_batch(pipeline, batch_size, generator, device)
        total += flow_matching_loss(pipeline, model, x0, x1, generator).item()
    return total / batches


@torch.no_grad()
def solve(
    solver: Solver, model: torch.nn.Module, noise: torch.Tensor, trajectory: bool = False
) -> SolveResult:
    return solver(model_field(model), noise, return_trajectory=trajectory)


def evaluate(
    pipeline: Pipeline,
    model: torch.nn.Module,
    config: EvalConfig,
    batch_size: int,
    device: torch.device,
    logger: logging.Logger,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns ``metrics`` (for metrics.json) and ``samples`` (tensors for the pictures):
    reference data, generated samples per solver setting, and a trajectory of the default
    solver."""
    model.eval()
    # Separate streams: the evaluation samples do not depend on eval.loss_batches.
    generator = torch.Generator().manual_seed(config.seed)
    noise = pipeline.source.sample(config.num_samples, generator)
    reference = pipeline.target.sample(config.num_samples, generator)
    loss_generator = torch.Generator().manual_seed(config.seed + 1)
    loss = final_loss(pipeline, model, batch_size, config.loss_batches, loss_generator, device)
    rows, generated = [], []
    for solver in pipeline.eval_solvers:
        result = solve(solver, model, noise.to(device))
        context = EvalContext(
            generated=result.x1.float().cpu(),
            reference=reference,
            noise=noise,
            field=model_field(model),
            solve=result,
        )
        row: dict[str, Any] = {**solver.describe(), "nfe": result.nfe}
        for name, metric in pipeline.metrics.items():
            value = metric(context)
            if isinstance(value, dict):
                row.update({f"{name}.{key}": float(v) for key, v in value.items()})
            else:
                row[name] = float(value)
        logger.info("eval " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
        rows.append(row)
        generated.append(context.generated)
    path = None
    if config.trajectories:
        path = solve(pipeline.solver, model, noise[: config.trajectories].to(device), True)
    metrics = {"final_loss": loss, "samples": rows}
    samples = {"noise": noise, "reference": reference, "generated": generated, "trajectory": path}
    return metrics, samples


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)
