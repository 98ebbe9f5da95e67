"""What the core's own tests use, for plugin authors' tests.

- ``check_coupler(coupler)``: the conformance checks every coupler passes;
  ``check_stateful_coupler(make_coupler, context)``: those of a ``StatefulCoupler``'s state
  (saved, restored, a snapshot, the same for couplers prepared alike);
- ``TINY_CONFIG``: a config that trains in a second on a CPU (2-D data, a small MLP);
- ``isolated_registry(*plugins)``: a registry holding the built-ins and ``plugins`` only
  (plugin objects or modules, or names of installed ``mfm.plugins`` entry points);
- ``train_briefly(*overrides, plugins=...)``: train ``TINY_CONFIG`` a few steps with
  ``overrides`` (``"coupler.name=mine"``) in such a registry, and return the losses.

Installed with mfm as a pytest plugin (``mfm_core.testing.pytest_plugin``, through the
``pytest11`` entry point), these come as the fixtures ``mfm_tiny_config``, ``mfm_registry``
and ``mfm_train``: a plugin's test file needs no setup. The runner is imported only when a
helper runs, so importing this module stays cheap.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from mfm_core.registry import ENTRY_POINT_GROUP, Registry, using_registry
from mfm_core.testing.conformance import check_coupler, check_stateful_coupler

__all__ = [
    "TINY_CONFIG",
    "ShortRun",
    "check_coupler",
    "check_stateful_coupler",
    "isolated_registry",
    "train_briefly",
    "write_tiny_config",
]

TINY_CONFIG = """
[data]
source = { name = "gaussian", shape = [2] }
target = "checkerboard"

[coupler]
name = "exact"

[model]
name = "mlp"
hidden = [32, 32]

[solver]
name = "euler"
steps = 4

[train]
steps = 40
batch_size = 32
lr = 1e-3
seed = 3
device = "cpu"
checkpoint_every = 10
keep_checkpoints = 2

[eval]
num_samples = 100
loss_batches = 2
trajectories = 20
metrics = ["w2"]
solvers = [
  { name = "euler", steps = 1 },
  { name = "rk4", steps = 2 },
  { name = "dopri5", atol = 1e-3, rtol = 1e-3 },
]
"""
"""A config that trains in a second or two on a CPU: 2-D data, a small MLP, three eval
solvers and the ``w2`` metric."""


def write_tiny_config(directory: str | Path, name: str = "tiny.toml") -> Path:
    """Write ``TINY_CONFIG`` to ``directory/name`` and return its path."""
    path = Path(directory) / name
    path.write_text(TINY_CONFIG)
    return path


def _entry_point(name: str) -> tuple[Any, str | None, str | None]:
    points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not points:
        raise LookupError(f"no installed plugin named {name!r} (entry point group mfm.plugins)")
    point = next(iter(points))
    dist = point.dist
    return point.load(), dist.name if dist else None, dist.version if dist else None


def isolated_registry(*plugins: object | str) -> Registry:
    """A registry holding mfm's built-in components and ``plugins``, and nothing else that is
    installed. A plugin is an object or module with ``@hookimpl`` functions, or the name of an
    installed ``mfm.plugins`` entry point (``"sinkhorn"``), loaded with its distribution."""
    from mfm_core import __version__, default_plugins

    registry = Registry(load_entry_points=False)
    registry.add_plugin(default_plugins, "builtin", distribution="mfm", version=__version__)
    for plugin in plugins:
        if isinstance(plugin, str):
            module, distribution, version = _entry_point(plugin)
            registry.add_plugin(module, plugin, distribution=distribution, version=version)
        else:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            registry.add_plugin(plugin, name)
    return registry


@attrs.frozen(kw_only=True)
class ShortRun:
    """What ``train_briefly`` returns: the run directory, the loss of every step, and the
    run's ``metrics.json``."""

    run_dir: Path
    losses: list[float]
    metrics: dict[str, Any]


def train_briefly(
    *overrides: str,
    plugins: Iterable[object | str] = (),
    steps: int = 3,
    directory: str | Path,
    config: str = TINY_CONFIG,
    registry: Registry | None = None,
) -> ShortRun:
    """Train ``config`` (default ``TINY_CONFIG``) for ``steps`` steps with ``overrides``
    (``"coupler.name=mine"``, ``"coupler.reg=0.1"``), logging every step, then evaluate it,
    as ``mfm run`` does, in ``directory``. Components come from ``registry``, default
    ``isolated_registry(*plugins)``. Raises ``AssertionError`` if a loss is not finite."""
    import json

    from mfm_core.runner.run import start_run
    from mfm_core.runner.rundir.layout import read_log

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "short.toml"
    path.write_text(config)
    every = [f"train.steps={steps}", "train.log_every=1", f"train.checkpoint_every={steps}"]
    with using_registry(registry or isolated_registry(*plugins)):
        run_dir = start_run(path, [*every, *overrides], directory / "runs", progress=False)
    losses = [record["loss"] for record in read_log(run_dir)]
    if not all(math.isfinite(loss) for loss in losses):
        raise AssertionError(f"training gave a loss that is not finite: {losses}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return ShortRun(run_dir=run_dir, losses=losses, metrics=metrics)
