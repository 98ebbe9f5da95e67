"""The training objective: draw a minibatch, couple it, regress the model onto the path's
velocity. Training, evaluation and reflow all use it."""

from __future__ import annotations

import torch

from mfm_core.datasets.draws import draw_labelled
from mfm_core.protocols import Field, ProbPath
from mfm_core.runner.assembly.pipeline import Pipeline

NULL_LABEL = -1
"""The label of "no class": classifier-free guidance trains on it and samples with it."""


def draw_batch(
    pipeline: Pipeline, batch_size: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A minibatch of noise, data and the data's labels (``None`` without labels), drawn on
    the CPU (reproducible on any device)."""
    x0 = pipeline.source.sample(batch_size, generator)
    x1, labels = draw_labelled(pipeline.target, batch_size, generator)
    labels = None if labels is None else labels.to(device)
    return x0.to(device, non_blocking=True), x1.to(device, non_blocking=True), labels


def is_conditional(model: torch.nn.Module) -> bool:
    """A class-conditional model takes labels as ``cond``."""
    return getattr(model, "num_classes", None) is not None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type of ``train.precision``: ``auto`` is bf16 on CUDA, fp32 elsewhere."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def regression_loss(
    path: ProbPath,
    model: torch.nn.Module,
    x0: torch.Tensor,
    x1: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Mean over pairs of ||v(x_t, t, cond) - u_t||^2 (squared norm summed over sample
    dimensions). The model runs under autocast to ``dtype`` when given; the loss is fp32."""
    sample = path.sample(x0, x1, t)
    with torch.autocast(x0.device.type, dtype=dtype, enabled=dtype is not None):
        args = (sample.x_t, sample.t) if cond is None else (sample.x_t, sample.t, cond)
        v = model(*args)
    return (v.float() - sample.u_t.float()).pow(2).flatten(1).sum(1).mean()


def flow_matching_loss(
    pipeline: Pipeline,
    model: torch.nn.Module,
    x0: torch.Tensor,
    x1: torch.Tensor,
    generator: torch.Generator,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """The joint CFM loss on one minibatch: couple, then :func:`regression_loss` with
    t ~ U[0, 1] drawn per pair. ``cond`` (labels of ``x1``) goes to coupler and model."""
    x0, x1, cond = pipeline.coupler(x0, x1, cond).pairs(x0, x1, cond)
    t = torch.rand(len(x0), generator=generator).to(x0.device)
    return regression_loss(pipeline.path, model, x0, x1, t, cond)


def model_field(
    model: torch.nn.Module,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    dtype: torch.dtype | None = None,
) -> Field:
    """The model as a field ``v(x, t)`` for solvers, for class ``labels`` when given.

    With a guidance scale ``w != 1`` it is classifier-free guidance,
    ``v = v_null + w (v_cond - v_null)``, both halves in one batch (``w = 0``: unconditional,
    ``w = 1``: plain conditional). Under autocast to ``dtype`` when given; the field is fp32.
    """

    def evaluate(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            return (model(x, t) if cond is None else model(x, t, cond)).float()

    if labels is None or guidance == 1.0:
        return lambda x, t: evaluate(x, t, labels)
    null = torch.full_like(labels, NULL_LABEL)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.expand(len(x))
        v_cond, v_null = evaluate(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])
        ).chunk(2)
        return v_null + guidance * (v_cond - v_null)

    return guided
