"""Hook specifications: the one place that says how a plugin adds components to mfm.

Every hook receives a ``register(name, factory)`` callback; ``factory(**params)`` builds the
component from its TOML table (every key but ``name``). Receiving a callback, rather than
returning a list, keeps plugins compatible when the core later passes more arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "mfm"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, Callable[..., Any]], None]


@hookspec
def register_couplers(register: Register) -> None:
    """Register couplers (see ``mfm_core.protocols.Coupler``): a class, a function returning
    the coupler, or the coupling function ``f(x0, x1) -> (i, j)`` itself."""


@hookspec
def register_paths(register: Register) -> None:
    """Register probability paths (see ``mfm_core.protocols.ProbPath``)."""


@hookspec
def register_vector_fields(register: Register) -> None:
    """Register vector-field networks (see ``mfm_core.protocols.VectorFieldNet``)."""


@hookspec
def register_solvers(register: Register) -> None:
    """Register ODE solvers (see ``mfm_core.protocols.Solver``)."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets (see ``mfm_core.protocols.Dataset``)."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register metrics (see ``mfm_core.protocols.Metric``)."""


@hookspec
def register_costs(register: Register) -> None:
    """Register pairwise costs for couplers: ``register(name, cost)`` with the cost function
    itself (not a factory): ``cost(a, b)`` maps float matrices (k0, d) and (k1, d) of
    flattened samples to the (k0, k1) cost matrix (see ``mfm_core.couplers.costs``)."""


@hookspec
def register_feature_maps(register: Register) -> None:
    """Register feature maps for metrics (see ``mfm_core.protocols.FeatureMap``), e.g. the
    Inception network of FID: ``features = { name = "inception", weights = "..." }``."""


@hookspec
def register_trackers(register: Register) -> None:
    """Register experiment trackers (see ``mfm_core.protocols.Tracker``): each receives a
    run's training records, evaluation metrics and pictures, e.g. TensorBoard's event files.
    ``train.trackers = [{ name = "tensorboard" }]``."""
