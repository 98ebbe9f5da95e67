"""``mfm validate``: build every component of a config and push one tiny batch through."""

from __future__ import annotations

import operator
from pathlib import Path

import torch

from mfm_core.errors import ConfigError
from mfm_core.registry import Registry, get_registry
from mfm_core.runner.assembly.loading import load_seeded
from mfm_core.runner.assembly.pipeline import COMPONENTS, resolve_device
from mfm_core.runner.training.distributed import from_environment
from mfm_core.runner.training.objective import draw_batch, flow_matching_loss, is_conditional
from mfm_core.runner.training.sizes import batch_sizes


def validate_config(
    config_path: str | Path, overrides: list[str], registry: Registry | None = None
) -> list[str]:
    """Build every component and push one tiny batch through coupler, path and model.
    Returns a description of what was built; raises ConfigError on any problem."""
    registry = registry or get_registry()
    config, pipeline = load_seeded(config_path, overrides, registry)
    verify = getattr(pipeline.target, "verify", None)
    if callable(verify):  # e.g. every file of an image folder is readable
        verify()
    env = from_environment()
    resolve_device(config.train.device, env.local_rank)
    sizes = batch_sizes(config.train, env.world_size)
    generator = torch.Generator().manual_seed(config.train.seed)
    x0, x1, labels = draw_batch(pipeline, 4, generator, torch.device("cpu"))
    cond = labels if is_conditional(pipeline.model) else None
    try:
        with torch.no_grad():
            flow_matching_loss(pipeline, pipeline.model, x0, x1, generator, cond)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"a test batch through coupler, path and model failed: {exc}") from exc
    lines = []
    for key, kind in COMPONENTS:
        spec = operator.attrgetter(key)(config)
        entry = registry.get(kind, spec.name)
        lines.append(f"{key:12} {spec.name} ({entry.provider})")
    lines.append(
        f"train        {sizes.per_rank} samples per process and step, micro-batches of "
        f"{sizes.micro}, coupled {sizes.coupling} at a time"
    )
    lines.append(
        f"eval         {len(pipeline.eval_solvers)} solver settings, "
        f"metrics: {', '.join(pipeline.metrics) or 'none'}"
    )
    return lines
