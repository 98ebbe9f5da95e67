"""What the core accepts from a plugin's component, and the one place that normalises it.

The registry passes every coupler, solver and path it builds through :func:`adapt`, so the
runner can call each one the same way whatever shape its author chose:

- a coupler may be a class, a function returning the coupler, or the coupling function itself
  (registered as it is); it may take ``(x0, x1)`` or ``(x0, x1, cond)`` (``cond`` is passed
  only when there are labels, and by keyword); it may return a ``Coupling`` or ``(i, j)``.
  Its inputs are checked before the call and its result after it, on the device with one host
  synchronisation: a bad result is a ``PluginError`` naming the coupler and its plugin, never
  an ``IndexError`` deep in the runner or silently wrong pairs;
- a solver may return the end point alone (a tensor); the adapter counts the field
  evaluations and makes the ``SolveResult``; ``describe()`` is optional;
- a path's ``sample`` may return ``(x_t, u_t)`` instead of a ``PathSample``.

An adapted component forwards every other attribute to the component it wraps (``.inner``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mfm_core.adapters.base import _POSITIONAL, _parameters, blame, ended_process
from mfm_core.adapters.coupler import CheckedCoupler, check_inputs
from mfm_core.adapters.solver_path import CheckedPath, CheckedSolver

__all__ = [
    "CheckedCoupler",
    "CheckedPath",
    "CheckedSolver",
    "adapt",
    "blame",
    "check_inputs",
    "ended_process",
    "factory",
]


def _is_component_itself(function: Callable[..., Any], arguments: int) -> bool:
    """A plain function whose first ``arguments`` parameters are positional and required is
    the coupler (or solver) itself, not a factory: a factory's parameters are keywords."""
    if inspect.isclass(function):
        return False
    parameters = _parameters(function)
    if parameters is None or len(parameters) < arguments:
        return False
    return all(
        p.kind in _POSITIONAL and p.default is inspect.Parameter.empty
        for p in parameters[:arguments]
    )


def factory(kind: str, registered: Callable[..., Any]) -> Callable[..., Any]:
    """The factory the registry calls for ``registered``: ``registered`` itself, or, for a
    coupling function (``f(x0, x1)``) or solver function (``f(field, x0)``) registered as it
    is, a factory without parameters that returns it."""
    if kind in ("coupler", "solver") and _is_component_itself(registered, 2):

        def as_is() -> Callable[..., Any]:
            return registered

        as_is.__name__ = getattr(registered, "__name__", kind)
        return as_is
    return registered


def adapt(
    kind: str,
    component: Any,
    label: str | None = None,
    name: str | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """``component`` as the runner calls it (see the module docstring); other kinds, and a
    component adapted already, are returned as they are. ``label`` says in errors which
    component and plugin it is (``coupler 'reverse' (plugin 'reverse' of ...)``); ``name``
    and ``params`` are its registered name and parameters."""
    wrapper = {"coupler": CheckedCoupler, "solver": CheckedSolver, "path": CheckedPath}.get(kind)
    if wrapper is None or isinstance(component, wrapper):
        return component
    name = name or getattr(component, "__name__", None) or type(component).__name__
    return wrapper(component, label or f"{kind} '{name}'", name, params or {})
