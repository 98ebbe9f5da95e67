"""Assemble the components a config names, through the registry and nothing else."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import torch

from mfm_core.config import Component, Config, ConfigProblems, load_config
from mfm_core.errors import ConfigError
from mfm_core.protocols import (
    TRACKER_PROVIDED,
    Coupler,
    Dataset,
    Metric,
    PrepareContext,
    ProbPath,
    Solver,
)
from mfm_core.registry import MissingService, Registry, get_registry
from mfm_core.runner.training.distributed import COUPLER_STREAM, derived_seed
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


Services = Mapping[str, Any]
"""What the runner offers to any factory that takes a keyword of that name (a config may not
set it), e.g. ``load_teacher(run)``, which reads a trained run for ``reflow``."""

NO_SERVICES: Services = MappingProxyType({})


def _build(
    registry: Registry, kind: str, spec: Component, where: str, services: Services, **provided: Any
) -> Any:
    return registry.create(
        kind, spec.name, spec.params, path=where, provided=provided, services=services
    )


def build_dataset(
    registry: Registry,
    spec: Component,
    where: str,
    root: str | None,
    services: Services = NO_SERVICES,
) -> Any:
    """A data set; ``data.root`` goes to a factory that takes ``root`` when the data set's
    own table does not set it (the table wins)."""
    missing = MissingService(
        f"$.data.root: the '{spec.name}' data set ({where}) reads its files from a "
        f"directory: set data.root=/path/to/data (or root in {where})"
    )
    offered = {**services, "root": missing if root is None else root}
    return _build(registry, "dataset", spec, where, offered)


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
        provided[key] = _build(registry, kind, nested, f"{where}.{key}", NO_SERVICES)
    return registry.create("metric", spec.name, params, path=where, provided=provided)


def default_metrics(shape: tuple[int, ...]) -> list[Component]:
    """``w2`` for vectors; nothing for images (exact OT on pixels is neither cheap nor
    meaningful)."""
    return [Component(name="w2")] if len(shape) == 1 else []


class _Problems:
    """Collects the ConfigError of each component, so one round reports them all."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def build(self, make: Callable[[], Any]) -> Any:
        try:
            return make()
        except ConfigError as exc:
            self.messages += [m for m in str(exc).splitlines() if m not in self.messages]
            return None


def build_pipeline(
    config: Config,
    registry: Registry | None = None,
    *,
    services: Services = NO_SERVICES,
    skip: frozenset[str] = frozenset(),
    earlier: Sequence[str] = (),
) -> Pipeline:
    """Build every component of ``config``; every problem, of every component, is reported in
    one ConfigError (one line each, naming its key), after the ``earlier`` problems of the
    config's own tables. ``services``: offered to the factories that take them. ``skip``:
    top-level tables not to build (they are broken)."""
    registry = registry or get_registry()
    problems = _Problems()
    problems.messages += earlier
    source = target = None
    if "data" not in skip:
        data = config.data
        source = problems.build(
            lambda: build_dataset(registry, data.source, "$.data.source", data.root, services)
        )
        target = problems.build(
            lambda: build_dataset(registry, data.target, "$.data.target", data.root, services)
        )
    if source is not None and target is not None and tuple(source.shape) != tuple(target.shape):
        problems.messages.append(
            f"$.data.source: samples of shape {tuple(source.shape)} do not match the target's "
            f"{tuple(target.shape)}; set the source's shape to match"
        )
    metrics = {}
    specs = config.eval.metrics
    if target is not None and "eval" not in skip:
        for index, spec in enumerate(default_metrics(target.shape) if specs is None else specs):
            where = f"$.eval.metrics[{index}]"
            if spec.name in metrics:
                problems.messages.append(f"{where}: metric '{spec.name}' is listed twice")
                continue
            metrics[spec.name] = problems.build(
                lambda s=spec, w=where: _build_metric(registry, s, w)
            )

    def part(key: str, kind: str, spec: Component, **provided: Any) -> Any:
        if key in skip:
            return None
        return problems.build(
            lambda: _build(registry, kind, spec, f"$.{key}", services, **provided)
        )

    model = None
    if target is not None:
        model = part("model", "vector_field", config.model, data_shape=tuple(target.shape))
    built = {
        "coupler": part("coupler", "coupler", config.coupler),
        "path": part("path", "path", config.path),
        "solver": part("solver", "solver", config.solver),
        "eval_solvers": [
            problems.build(
                lambda s=spec, i=index: _build(
                    registry, "solver", s, f"$.eval.solvers[{i}]", services
                )
            )
            for index, spec in enumerate(config.eval.solvers if "eval" not in skip else ())
        ],
    }
    if built["coupler"] is not None and source is not None and target is not None:
        problems.build(lambda: built["coupler"].prepare(_prepare_context(config, source, target)))
    # Trackers are built by the run, which has the run directory; their tables are checked now.
    for index, spec in enumerate(config.train.trackers if "train" not in skip else ()):
        problems.build(
            lambda s=spec, i=index: registry.check(
                "tracker",
                s.name,
                s.params,
                path=f"$.train.trackers[{i}]",
                provided=TRACKER_PROVIDED,
            )
        )
    if problems.messages:
        raise ConfigError("\n".join(problems.messages))
    return Pipeline(source=source, target=target, model=model, metrics=metrics, **built)


def _prepare_context(config: Config, source: Dataset, target: Dataset) -> PrepareContext:
    """What a stateful coupler is prepared with; its generator does not depend on the rank,
    so every process of a torchrun job prepares the same state."""
    seed = derived_seed(config.train.seed, COUPLER_STREAM, 0)
    return PrepareContext(
        source=source, target=target, generator=torch.Generator().manual_seed(seed)
    )


def load_pipeline(
    config_path: str | Path,
    overrides: Sequence[str] = (),
    registry: Registry | None = None,
    services: Services = NO_SERVICES,
) -> tuple[Config, Pipeline]:
    """Read ``config_path`` with ``overrides`` and build its pipeline, the model's initial
    weights seeded by ``train.seed``. A config with problems in its tables and in its
    components reports both in one ConfigError."""
    try:
        config = load_config(config_path, list(overrides))
    except ConfigProblems as exc:
        build_pipeline(
            exc.partial,
            registry,
            services=services,
            skip=exc.broken,
            earlier=str(exc).splitlines(),
        )
        raise
    torch.manual_seed(config.train.seed)
    return config, build_pipeline(config, registry, services=services)


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` is a CUDA device when there is one, else the CPU. Under torchrun
    (``local_rank`` given) ``auto`` and ``cuda`` mean this process's GPU, ``cuda:LOCAL_RANK``,
    and a fixed ``cuda:N`` is an error: it would put every process on one GPU."""
    if local_rank is not None and name.startswith("cuda:"):
        raise ConfigError(
            f"$.train.device: {name!r} would put every torchrun process on one GPU; set "
            "train.device = 'cuda' (or 'auto'): each process then takes the GPU of its "
            "LOCAL_RANK (choose the GPUs with CUDA_VISIBLE_DEVICES)"
        )
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
