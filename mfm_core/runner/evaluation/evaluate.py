"""After training: the final loss, then samples and metrics for every solver setting; image
grids during and after training."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from mfm_core.config import Config, EvalConfig
from mfm_core.datasets.draws import draw_labelled
from mfm_core.errors import MfmError
from mfm_core.protocols import EvalContext, Field, Metric, Solver, SolveResult
from mfm_core.runner.assembly.pipeline import Pipeline
from mfm_core.runner.evaluation import images
from mfm_core.runner.evaluation.sampling import generate
from mfm_core.runner.training.objective import (
    autocast_dtype,
    draw_batch,
    flow_matching_loss,
    is_conditional,
    model_field,
)

logger = logging.getLogger(__name__)


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
        x0, x1, labels = draw_batch(pipeline, batch_size, generator, device)
        cond = labels if is_conditional(model) else None
        total += flow_matching_loss(pipeline, model, x0, x1, generator, cond).item()
    return total / batches


@attrs.frozen(kw_only=True)
class EvalInputs:
    """Noise to integrate, the class labels to generate (conditional models), and as many
    real samples to compare with, with their labels; all from a generator seeded with
    ``eval.seed``."""

    noise: torch.Tensor
    labels: torch.Tensor | None
    reference: torch.Tensor
    reference_labels: torch.Tensor | None = None


def eval_inputs(pipeline: Pipeline, config: EvalConfig, count: int) -> EvalInputs:
    generator = torch.Generator().manual_seed(config.seed)
    noise = pipeline.source.sample(count, generator)
    reference, reference_labels = draw_labelled(pipeline.target, count, generator)
    labels = None
    if is_conditional(pipeline.model):
        labels = torch.randint(pipeline.model.num_classes, (count,), generator=generator)
    return EvalInputs(
        noise=noise, labels=labels, reference=reference, reference_labels=reference_labels
    )


def row_label(row: dict[str, Any]) -> str:
    """``euler 4 (NFE 4)``: a caption for one solver setting."""
    steps = f" {row['steps']}" if "steps" in row else ""
    return f"{row['solver']}{steps} (NFE {row['nfe']})"


def save_image_panels(
    path: Path,
    reference: torch.Tensor,
    generated: list[torch.Tensor],
    rows: list[dict],
    count: int,
    *,
    labels: torch.Tensor | None = None,
    reference_labels: torch.Tensor | None = None,
    num_classes: int | None = None,
) -> None:
    """The data, then the samples of each solver setting, ``count`` images each, as one
    picture. With ``num_classes`` (a conditional model) one row per class, the samples by
    their ``labels`` and the data by ``reference_labels``."""
    panels = [("data", reference, reference_labels)]
    panels += [(row_label(row), x, labels) for row, x in zip(rows, generated, strict=True)]
    if num_classes is None or labels is None or reference_labels is None:
        pictures = [(caption, images.to_uint8(x[:count])) for caption, x, _ in panels]
        images.save_panels(path, pictures)
        return
    columns = math.ceil(count / num_classes)
    pictures = [
        (caption, images.by_class(images.to_uint8(x), y.numpy(), num_classes, columns))
        for caption, x, y in panels
    ]
    images.save_panels(path, pictures, columns, [f"class {k}" for k in range(num_classes)])


def write_grid(
    path: Path, pipeline: Pipeline, model: torch.nn.Module, config: Config, device: torch.device
) -> None:
    """``eval.grid`` images from the same noise at every eval solver setting, beside as many
    real ones: how sample quality depends on the NFE, at this point of training."""
    model.eval()
    inputs = eval_inputs(pipeline, config.eval, config.eval.grid)
    dtype = autocast_dtype(config.train.precision, device)
    rows, generated = [], []
    for solver in pipeline.eval_solvers:
        result = generate(
            solver,
            model,
            inputs.noise,
            device,
            labels=inputs.labels,
            guidance=config.eval.guidance,
            batch_size=config.eval.batch_size,
            dtype=dtype,
        )
        rows.append({**solver.describe(), "nfe": result.nfe})
        generated.append(result.x1)
    save_image_panels(
        path,
        inputs.reference,
        generated,
        rows,
        config.eval.grid,
        labels=inputs.labels,
        reference_labels=inputs.reference_labels,
        num_classes=getattr(model, "num_classes", None),
    )


def evaluate(
    pipeline: Pipeline,
    model: torch.nn.Module,
    config: Config,
    loss_batch_size: int,
    device: torch.device,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate ``model``; ``loss_batch_size`` is the run's coupling batch (the final loss's
    minibatches, and the context's ``coupling_batch``).

    Returns ``metrics`` (for metrics.json) and ``samples`` (tensors for the pictures):
    reference data, generated samples per solver setting, and a trajectory of the default
    solver (vectors only). For images without metrics, ``eval.grid`` samples per setting.

    ``metrics``: ``final_loss``; ``samples``, one row per solver setting (its description,
    the NFE it used, and every per-solver metric); ``run``, the metrics that do not depend on
    the solver; ``errors``, the message of each metric that failed (its value is NaN): a
    failing metric never loses the rest of the evaluation.
    """
    model.eval()
    started = time.perf_counter()
    settings = config.eval
    image = images.is_image_shape(tuple(pipeline.target.shape))
    count = settings.grid if image and not pipeline.metrics else settings.num_samples
    dtype = autocast_dtype(config.train.precision, device)
    # Separate streams: the evaluation samples do not depend on eval.loss_batches.
    inputs = eval_inputs(pipeline, settings, count)
    loss_generator = torch.Generator().manual_seed(settings.seed + 1)
    loss = final_loss(
        pipeline, model, loss_batch_size, settings.loss_batches, loss_generator, device
    )
    seconds: dict[str, Any] = {"final_loss": round(time.perf_counter() - started, 3), "solvers": []}

    def make_field(labels: torch.Tensor | None) -> Field:
        labels = None if labels is None else labels.to(device)
        return model_field(model, labels, settings.guidance, dtype)

    def resolve(
        solver: Solver,
        noise: torch.Tensor,
        labels: torch.Tensor | None = None,
        trajectory: bool = False,
    ) -> SolveResult:
        return generate(
            solver,
            model,
            noise,
            device,
            labels=labels,
            guidance=settings.guidance,
            batch_size=settings.batch_size,
            dtype=dtype,
            trajectory=trajectory,
        )

    def training_loss(generator: torch.Generator) -> torch.Tensor:
        x0, x1, labels = draw_batch(pipeline, loss_batch_size, generator, device)
        cond = labels if is_conditional(model) else None
        return flow_matching_loss(pipeline, model, x0, x1, generator, cond)

    shared = {
        "reference": inputs.reference,
        "noise": inputs.noise,
        "labels": inputs.labels,
        "reference_labels": inputs.reference_labels,
        "field": make_field(inputs.labels),
        "make_field": make_field,
        "generate": resolve,
        "model": model,
        "source": pipeline.source,
        "target": pipeline.target,
        "loss": training_loss,
        "coupler": pipeline.coupler,
        "coupling_batch": loss_batch_size,
        "device": device,
        "seed": settings.seed,
        "cache": {},
    }
    rows, generated, run_level, errors, floors = [], [], {}, {}, {}
    # Vectors: the trajectory of the run's solver comes from its own row of the sweep, so the
    # picture and the table report the same solve (an adaptive solver's NFE depends on the
    # batch it integrates).
    trajectory_row = None
    if settings.trajectories and not image:
        described = [s.describe() for s in pipeline.eval_solvers]
        if pipeline.solver.describe() in described:
            trajectory_row = described.index(pipeline.solver.describe())
    path = None
    for index, solver in enumerate(pipeline.eval_solvers):
        solver_started = time.perf_counter()
        result = resolve(solver, inputs.noise, inputs.labels, trajectory=index == trajectory_row)
        if index == trajectory_row:
            path = SolveResult(
                x1=result.x1[: settings.trajectories],
                nfe=result.nfe,
                trajectory=result.trajectory[:, : settings.trajectories],
                times=result.times,
            )
        context = EvalContext(generated=result.x1, solve=result, solver=solver, **shared)
        if index == 0:
            floors = _noise_floors(pipeline.metrics, context, errors)
        row: dict[str, Any] = {**solver.describe(), "nfe": result.nfe}
        for name, metric in pipeline.metrics.items():
            if not getattr(metric, "per_solver", True):
                if name not in run_level:
                    run_level[name] = _measure(name, metric, context, errors)
                continue
            row.update(_measure(name, metric, context, errors, row_label(row)))
        seconds["solvers"].append(round(time.perf_counter() - solver_started, 3))
        logger.info(
            "eval "
            + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items())
            + f"  ({seconds['solvers'][-1]:.1f} s)"
        )
        rows.append(row)
        generated.append(result.x1)
    if run_level:
        logger.info(
            "eval " + "  ".join(f"{k}={_fmt(v)}" for m in run_level.values() for k, v in m.items())
        )
    if settings.trajectories and not image and path is None:
        noise = inputs.noise[: settings.trajectories]
        some = None if inputs.labels is None else inputs.labels[: settings.trajectories]
        path = resolve(pipeline.solver, noise, some, trajectory=True)
    seconds["total"] = round(time.perf_counter() - started, 3)
    logger.info(
        f"evaluation took {seconds['total']:.1f} s: final loss {seconds['final_loss']:.1f} s, "
        f"{len(rows)} solver setting{'' if len(rows) == 1 else 's'} "
        f"{sum(seconds['solvers']):.1f} s" + ("" if rows else " (eval.solvers = [])")
    )
    metrics: dict[str, Any] = {
        "final_loss": loss,
        "samples": rows,
        "eval": eval_record(config),
        "eval_seconds": seconds,
    }
    if run_level:
        metrics["run"] = {k: v for values in run_level.values() for k, v in values.items()}
    better = directions(pipeline.metrics)
    if better:
        metrics["better"] = better
    if floors:
        metrics["floors"] = floors
    if errors:
        metrics["errors"] = errors
    samples = {
        "noise": inputs.noise,
        "reference": inputs.reference,
        "generated": generated,
        "trajectory": path,
        "image": image,
        "labels": inputs.labels,
        "reference_labels": inputs.reference_labels,
        "num_classes": getattr(model, "num_classes", None),
    }
    return metrics, samples


def eval_record(config: Config) -> dict[str, Any]:
    """The settings an evaluation ran with, so its figures can be read and repeated."""
    settings = config.eval
    return {
        "num_samples": settings.num_samples,
        "seed": settings.seed,
        "loss_batches": settings.loss_batches,
        "guidance": settings.guidance,
        "solvers": [solver.to_toml() for solver in settings.solvers],
        "trajectory_solver": config.solver.to_toml(),
    }


def directions(metrics: dict[str, Metric]) -> dict[str, str]:
    """Which way is better for each reported column, from the metrics' ``better``."""
    better: dict[str, str] = {}
    for name, metric in metrics.items():
        declared = getattr(metric, "better", None)
        if isinstance(declared, str):
            better[name] = declared
        elif isinstance(declared, dict):
            better.update({f"{name}.{key}": value for key, value in declared.items()})
    return better


def _noise_floors(
    metrics: dict[str, Metric],
    context: EvalContext,
    errors: dict[str, str],
) -> dict[str, float]:
    """``noise_floor(ctx)`` of every metric that has one (a failure is recorded, not fatal)."""
    floors = {}
    for name, metric in metrics.items():
        floor = getattr(metric, "noise_floor", None)
        if floor is None:
            continue
        try:
            with torch.no_grad():
                floors[name] = float(floor(context))
        except (ValueError, RuntimeError, MfmError) as exc:
            errors[f"{name} (noise floor)"] = f"{type(exc).__name__}: {exc}"
            logger.warning(f"the noise floor of metric {name} failed: {exc}")
    return floors


def _measure(
    name: str,
    metric: Metric,
    context: EvalContext,
    errors: dict[str, str],
    where: str | None = None,
) -> dict[str, float]:
    """``{name: value}``, or ``{name.key: value}`` for a metric returning a dict. A metric that
    raises is logged and recorded in ``errors``; its value is NaN."""
    try:
        with torch.no_grad():
            value = metric(context)
    except (ValueError, RuntimeError, MfmError) as exc:
        message = f"{type(exc).__name__}: {exc}"
        key = name if where is None else f"{name} ({where})"
        errors[key] = message
        logger.warning(f"metric {key} failed: {message}")
        return {name: math.nan}
    if isinstance(value, dict):
        return {f"{name}.{key}": float(v) for key, v in value.items()}
    return {name: float(value)}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)
