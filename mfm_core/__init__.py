"""mfm: Multisample Flow Matching. The core: protocols, the plugin registry and the runner.

Plugins use ``hookimpl``; users build any registered component with ``create``.
"""

from mfm_core.errors import CheckpointError, ConfigError, MfmError, PluginError
from mfm_core.hookspecs import hookimpl
from mfm_core.protocols import (
    Coupler,
    Coupling,
    Dataset,
    EvalContext,
    IndexedDataset,
    Metric,
    PathSample,
    ProbPath,
    Solver,
    SolveResult,
    VectorFieldNet,
)
from mfm_core.registry import Registry, create, get_registry

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "Coupler",
    "Coupling",
    "Dataset",
    "EvalContext",
    "IndexedDataset",
    "Metric",
    "MfmError",
    "ProbPath",
    "PathSample",
    "PluginError",
    "Registry",
    "Solver",
    "SolveResult",
    "VectorFieldNet",
    "create",
    "get_registry",
    "hookimpl",
]
