"""Components given as Python callables in a dict config (the Python API): a notebook user
writes ``{"coupler": my_coupler}`` instead of writing a plugin. Each callable is registered,
under its ``__name__``, in a registry of its own that also holds every installed plugin, and
the config names it like any other component.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable, Mapping
from typing import Any

from mfm_core.hookspecs import hookimpl
from mfm_core.registry import HOOKS, Registry

SINGLE = {
    ("data", "source"): "dataset",
    ("data", "target"): "dataset",
    ("coupler",): "coupler",
    ("path",): "path",
    ("model",): "vector_field",
    ("solver",): "solver",
}
LISTS = {
    ("eval", "solvers"): "solver",
    ("eval", "metrics"): "metric",
    ("train", "trackers"): "tracker",
}
"""Where a config names components, and their kind (a single one, or a list of them)."""


def _named(value: Any, kind: str, found: list[tuple[str, str, Callable[..., Any]]]) -> Any:
    """``value`` with a callable (alone, or as a table's ``name``) replaced by its name."""
    table = dict(value) if isinstance(value, Mapping) else None
    factory = table.get("name") if table is not None else value
    if not callable(factory):
        return value
    name = getattr(factory, "__name__", type(factory).__name__)
    found.append((kind, name, factory))
    if table is None:
        return name
    return {**table, "name": name}


def extract_callables(config: Mapping[str, Any]) -> tuple[dict[str, Any], Registry | None]:
    """``config`` with every callable component replaced by its name, and a registry holding
    the installed plugins and those callables (``None`` when there are none)."""
    data = copy.deepcopy({k: v for k, v in config.items()})
    found: list[tuple[str, str, Callable[..., Any]]] = []
    for keys, kind in [*SINGLE.items(), *LISTS.items()]:
        parent = data
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or keys[-1] not in parent:
            continue
        value = parent[keys[-1]]
        if (keys, kind) in LISTS.items() and isinstance(value, list):
            parent[keys[-1]] = [_named(item, kind, found) for item in value]
        else:
            parent[keys[-1]] = _named(value, kind, found)
    if not found:
        return data, None
    registry = Registry()
    registry.add_plugin(_plugin(found), "python")
    return data, registry


def _plugin(found: list[tuple[str, str, Callable[..., Any]]]) -> types.ModuleType:
    """A plugin module whose hooks register ``found``: the same hooks as any plugin's."""
    plugin = types.ModuleType("python_components")
    for kind, hook in HOOKS.items():
        entries = [(name, factory) for k, name, factory in found if k == kind]
        if not entries:
            continue

        def register_all(register: Any, entries: list = entries) -> None:
            for name, factory in entries:
                register(name, factory)

        register_all.__name__ = hook
        setattr(plugin, hook, hookimpl(register_all))
    return plugin
