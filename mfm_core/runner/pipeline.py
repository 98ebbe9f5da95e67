"""Assemble the components a config names, through the registry and nothing else."""

from __future__ import annotations

import inspect
from typing import Any

import attrs
import torch

from mfm_core import adapters
from mfm_core.config import Component, Config
from mfm_core.errors import ConfigError
from mfm_core.protocols import Coupler, Dataset, Metric, ProbPath, Solver
from mfm_core.registry import Registry, get_registry
from mfm_core.runner.teacher import load_teacher
from mfm_core.schema import converter


@attrs.frozen(kw_only=True)
class Pipeline:
    """Every component of a run, built and checked."""

    source: Dataset
    target: Dataset
    coupler: Coupler
    path: ProbPath
    model: torch.nn.Module
    solver: Solver
    eval_solvers: list[Solver]
    metrics: dict[str, Metric]


COMPONENTS = (
    ("data.source", "dataset"),
    ("data.target", "dataset"),
    ("coupler", "coupler"),
    ("path", "path"),
    ("model", "vector_field"),
    ("solver", "solver"),
)
"""The config key and registry kind of every single component of a run."""


SERVICES: dict[str, Any] = {"load_teacher": load_teacher}
"""What the runner gives to any factory that takes a keyword of this name (a config may not
set it): ``load_teacher(run)`` reads a trained run, for ``reflow``."""


def _build(registry: Registry, kind: str, spec: Component, where: str, **provided: Any) -> Any:
    factory = adapters.factory(kind, registry.get(kind, spec.name, where).factory)
    parameters = inspect.signature(factory).parameters
    services = {key: value for key, value in SERVICES.items() if key in parameters}
    return registry.create(
        kind, spec.name, spec.params, path=where, provided={**services, **provided}
    )


def build_dataset(registry: Registry, spec: Component, where: str, root: str | None) -> Any:
    """A data set; ``data.root`` goes to a factory that takes ``root`` when the data set's
    own table does not set it (the table wins)."""
    parameter = inspect.signature(registry.get("dataset", spec.name, where).factory).parameters
    if "root" not in parameter or "root" in spec.params:
        return _build(registry, "dataset", spec, where)
    if root is None and parameter["root"].default is inspect.Parameter.empty:
        raise ConfigError(
            f"$.data.root: the '{spec.name}' data set ({where}) reads its files from a "
            f"directory: set data.root=/path/to/data (or root in {where})"
        )
    provided = {} if root is None else {"root": root}
    return _build(registry, "dataset", spec, where, **provided)


NESTED_METRIC_COMPONENTS = {"features": "feature_map"}
"""Metric parameters that name a component of their own: ``features = "pixels"`` or
``features = { name = "inception", weights = "..." }`` is built as a feature map."""


def _build_metric(registry: Registry, spec: Component, where: str) -> Any:
    params, provided = dict(spec.params), {}
    for key, kind in NESTED_METRIC_COMPONENTS.items():
        if key not in params:
            continue
        value = params.pop(key)
        try:
            nested = converter.structure(value, Component)
        except Exception as exc:  # noqa: BLE001 - cattrs wraps the hook's error
            raise ConfigError(
                f"{where}.{key}: expected a {kind.replace('_', ' ')} name or a table with a "
                f"name, got {value!r}"
            ) from exc
        provided[key] = _build(registry, kind, nested, f"{where}.{key}")
    return registry.create("metric", spec.name, params, path=where, provided=provided)


def default_metrics(shape: tuple[int, ...]) -> list[Component]:
    """``w2`` for vectors; nothing for images (exact OT on pixels is neither cheap nor
    meaningful)."""
    return [Component(name="w2")] if len(shape) == 1 else []


def build_pipeline(config: Config, registry: Registry | None = None) -> Pipeline:
    """Build every component of ``config``; any problem is a ConfigError naming its key."""
    registry = registry or get_registry()
    source = build_dataset(registry, config.data.source, "$.data.source", config.data.root)
    target = build_dataset(registry, config.data.target, "$.data.target", config.data.root)
    if tuple(source.shape) != tuple(target.shape):
        raise ConfigError(
            f"$.data.source: samples of shape {tuple(source.shape)} do not match the target's "
            f"{tuple(target.shape)}; set the source's shape to match"
        )
    metrics = {}
    specs = config.eval.metrics
    for index, spec in enumerate(default_metrics(target.shape) if specs is None else specs):
        where = f"$.eval.metrics[{index}]"
        if spec.name in metrics:
            raise ConfigError(f"{where}: metric '{spec.name}' is listed twice")
        metrics[spec.name] = _build_metric(registry, spec, where)
    return Pipeline(
        source=source,
        target=target,
        coupler=_build(registry, "coupler", config.coupler, "$.coupler"),
        path=_build(registry, "path", config.path, "$.path"),
        model=_build(
            registry, "vector_field", config.model, "$.model", data_shape=tuple(target.shape)
        ),
        solver=_build(registry, "solver", config.solver, "$.solver"),
        eval_solvers=[
            _build(registry, "solver", spec, f"$.eval.solvers[{index}]")
            for index, spec in enumerate(config.eval.solvers)
        ],
        metrics=metrics,
    )


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` is a CUDA device when there is one, else the CPU. Under torchrun
    (``local_rank`` given) ``auto`` and ``cuda`` mean this process's GPU, ``cuda:LOCAL_RANK``."""
    if local_rank is not None and name in ("auto", "cuda") and torch.cuda.is_available():
        name = f"cuda:{local_rank}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"$.train.device: {name!r} requested but CUDA is not available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"$.train.device: {name!r} requested but there are only "
            f"{torch.cuda.device_count()} CUDA devices"
        )
    return device
