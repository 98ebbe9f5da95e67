"""mfm: Multisample Flow Matching. The core: protocols, the plugin registry and the runner.

Everything a plugin author needs comes from here: ``hookimpl`` and ``Register`` (the hooks),
the protocols and their result classes, ``PairCoupler`` and ``cost_matrix`` (to write a
pairing coupler), ``InvalidValue`` (to reject a parameter), and ``check_coupler`` and
``check_stateful_coupler`` (to test one). Users build any registered component with
``create``, and train, load and sample from runs with ``train``, ``load_run`` and
``Run.sample`` (docs/python.md).
"""

from mfm_core.api import Run, Samples, load_run, train
from mfm_core.couplers.base import PairCoupler
from mfm_core.couplers.costs import cost_matrix
from mfm_core.errors import CheckpointError, ConfigError, MfmError, PluginError
from mfm_core.hookspecs import Register, hookimpl
from mfm_core.protocols import (
    Coupler,
    Coupling,
    Dataset,
    EvalContext,
    FeatureMap,
    IndexedDataset,
    Metric,
    PathSample,
    PointSet,
    PrepareContext,
    ProbPath,
    Solver,
    SolveResult,
    StatefulCoupler,
    Tracker,
    VectorFieldNet,
)
from mfm_core.registry import Registry, create, get_registry
from mfm_core.schema import InvalidValue
from mfm_core.testing.conformance import check_coupler, check_stateful_coupler

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "Coupler",
    "Coupling",
    "Dataset",
    "EvalContext",
    "FeatureMap",
    "IndexedDataset",
    "InvalidValue",
    "Metric",
    "MfmError",
    "PairCoupler",
    "ProbPath",
    "PathSample",
    "PluginError",
    "PointSet",
    "PrepareContext",
    "Register",
    "Registry",
    "Run",
    "Samples",
    "Solver",
    "SolveResult",
    "StatefulCoupler",
    "Tracker",
    "VectorFieldNet",
    "check_coupler",
    "check_stateful_coupler",
    "cost_matrix",
    "create",
    "get_registry",
    "load_run",
    "train",
    "hookimpl",
]
