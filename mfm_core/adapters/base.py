"""The adapter base: an adapted component forwards to the one it wraps and names it in errors."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mfm_core.errors import PluginError

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_STATEFUL_METHODS = ("prepare", "state_dict", "load_state_dict")


def _parameters(function: Callable[..., Any]) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return None


class _Adapted:
    """Forwards attribute reads to ``inner``: an adapted component keeps its parameters. The
    adapter's own attributes start with an underscore, so they hide none of the component's."""

    def __init__(self, inner: Any, label: str, name: str, params: dict[str, Any]) -> None:
        self.inner = inner
        self._label = label
        self._name = name
        self._params = params

    def __getattr__(self, attribute: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None or attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(inner, attribute)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def _fail(self, problem: str) -> PluginError:
        return PluginError(
            f"{self._label} {problem}; this is a bug in the plugin (report it to its authors), "
            "or pick another component"
        )


def ended_process(exc: BaseException) -> str:
    """What is wrong with a component raising ``exc`` (SystemExit, KeyboardInterrupt)."""
    return (
        f"raised {type(exc).__name__}({', '.join(map(repr, exc.args))}) while coupling, which "
        "ends the process; a coupler raises an Exception to report a problem"
    )


def blame(component: Any, problem: str) -> PluginError:
    """The error of a component (adapted or not) that did something it must not (``problem``),
    naming it and, when adapted, its plugin."""
    if isinstance(component, _Adapted):
        return component._fail(problem)
    return PluginError(f"{type(component).__name__} {problem}; this is a bug in that component")
