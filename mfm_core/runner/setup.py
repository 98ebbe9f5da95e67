"""What every command builds first: the pipeline from a seeded RNG, checked against the data;
``RunSession`` holds it with the rest of one process's view of a run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import torch

from mfm_core.config import Config
from mfm_core.errors import ConfigError
from mfm_core.registry import Registry
from mfm_core.runner.distributed import Distributed
from mfm_core.runner.objective import is_conditional
from mfm_core.runner.pipeline import Pipeline, build_pipeline, load_pipeline


@attrs.frozen(kw_only=True)
class RunSession:
    """One process's view of a run: its config, the built pipeline, the run directory, the
    process group it belongs to and its device."""

    config: Config
    pipeline: Pipeline
    run_dir: Path
    env: Distributed
    device: torch.device


def seeded_pipeline(config: Config, registry: Registry | None = None) -> Pipeline:
    """The pipeline of ``config``, checked against its data; the model's initial weights
    come from the global RNG, seeded here with ``train.seed``."""
    torch.manual_seed(config.train.seed)
    pipeline = build_pipeline(config, registry)
    _check_labels(config, pipeline)
    return pipeline


def load_seeded(
    config_path: str | Path, overrides: Sequence[str] = (), registry: Registry | None = None
) -> tuple[Config, Pipeline]:
    """Read a config and build its seeded, checked pipeline; every problem of the config's
    tables and of its components is reported in one round."""
    config, pipeline = load_pipeline(config_path, overrides, registry)
    _check_labels(config, pipeline)
    return config, pipeline


def _check_labels(config: Config, pipeline: Pipeline) -> None:
    """A class-conditional model needs labelled data with no more classes than it has."""
    if not is_conditional(pipeline.model):
        return
    classes = getattr(pipeline.target, "num_classes", None)
    wanted = pipeline.model.num_classes
    if classes is None:
        raise ConfigError(
            f"$.model.num_classes: the model is class-conditional, but the target data set "
            f"'{config.data.target.name}' has no labels; leave num_classes out"
        )
    if classes > wanted:
        raise ConfigError(
            f"$.model.num_classes: {wanted}, but the target data set "
            f"'{config.data.target.name}' has {classes} classes"
        )
