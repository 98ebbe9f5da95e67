"""What a component accepts: its parameters, read from the factory's signature and docstring.

This is what ``mfm describe KIND NAME`` and ``mfm plugins --params`` print. It needs nothing
from a plugin's author beyond a normal signature: type hints give the types, defaults the
defaults, and the docstring sentence that names a parameter (``name`` in double backticks, a
``name:`` line, or a Google/NumPy ``Args`` entry) its explanation.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

import attrs

from mfm_core.protocols import TRACKER_PROVIDED
from mfm_core.registry import Entry

RUNNER_PROVIDED = frozenset({"data_shape", "loader", *TRACKER_PROVIDED})
"""Keywords the runner passes itself; a config does not set them. (A metric's ``features``
is built by the runner too, but from the name or table the config gives, so it is listed.)"""

COMPONENT_ITSELF = frozenset({"cost"})
"""Kinds whose registered object is the component itself (``cost(a, b)``), not a factory:
a config names it and sets nothing."""


def _services() -> frozenset[str]:
    """Keywords the runner offers as services (e.g. ``load_teacher``); a config cannot set
    them."""
    from mfm_core.runner.assembly.loading import SERVICES

    return frozenset(SERVICES)


def plain(text: str) -> str:
    """``text`` without reST markup: inline code in single or double backticks loses its
    backticks, and a role such as ``:class:`~a.B``` becomes its last name, ``B``."""
    text = re.sub(r":[\w:]+:`~?([^`]*)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return re.sub(r"``([^`]*)``|`([^`]*)`", lambda m: m.group(1) or m.group(2) or "", text)


@attrs.frozen(kw_only=True)
class ParameterInfo:
    """One keyword parameter of a factory: ``default`` is ``None`` when ``required``."""

    name: str
    type: str
    default: Any
    required: bool
    doc: str


@attrs.frozen(kw_only=True)
class ComponentInfo:
    """A registered component: where it comes from, its summary and its parameters.
    ``open_ended`` is true when the factory takes ``**kwargs`` (more keys than listed)."""

    kind: str
    name: str
    provider: str
    summary: str
    parameters: tuple[ParameterInfo, ...]
    open_ended: bool

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self, value_serializer=lambda _i, _a, v: _jsonable(v))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, type(None), list, dict, tuple)):
        return list(value) if isinstance(value, tuple) else value
    return repr(value)


def _type_name(hint: Any) -> str:
    if hint is inspect.Parameter.empty:
        return "any"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    text = str(hint).replace("typing.", "").replace("NoneType", "None")
    text = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    # mfm_core.protocols.FeatureMap -> FeatureMap, leaving quoted Literal values alone
    parts = re.split(r"('[^']*')", text)
    return "".join(
        p if p.startswith("'") else re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", p)
        for p in parts
    )


def _docstring(factory: Callable[..., Any]) -> str:
    """The factory's docstring; for a class also its ``__init__``'s and its base classes'
    (a parameter a base class handles is documented there)."""
    if not inspect.isclass(factory):
        return inspect.getdoc(factory) or ""
    parts = []
    for cls in factory.__mro__[:-1]:
        parts += [
            cls.__dict__.get("__doc__"),
            getattr(cls.__dict__.get("__init__"), "__doc__", None),
        ]
    return "\n\n".join(inspect.cleandoc(p) for p in parts if p)


def _sentences(text: str) -> list[str]:
    flat = re.sub(r"\s+", " ", text).strip()
    return [s.strip() for s in re.split(r"(?<=[.;])\s+(?=[A-Z`(])", flat) if s.strip()]


def parameter_doc(doc: str, name: str) -> str:
    """The docstring's explanation of ``name``: an ``Args``-style entry (``name: ...`` or
    ``name (type): ...`` at the start of a line) if there is one, else the first sentence
    that mentions ``name`` in double backticks; ``""`` when the docstring says nothing."""
    entry = re.search(
        rf"^([ \t]*){re.escape(name)}[ \t]*(\([^)]*\))?[ \t]*:[ \t]*(.+(?:\n\1[ \t]+\S.*)*)",
        doc,
        re.MULTILINE,
    )
    if entry:  # the entry's line and the lines indented deeper below it
        return plain(re.sub(r"\s+", " ", entry.group(3)).strip())
    marker = f"``{name}``"
    sentences = _sentences(doc)
    for sentence in sentences[1:]:  # the first is the component's summary
        if marker in sentence:
            return plain(sentence)
    return ""


def component_info(entry: Entry) -> ComponentInfo:
    """The parameters of ``entry``'s factory, in signature order."""
    from mfm_core import adapters

    factory = entry.factory
    settable = entry.kind not in COMPONENT_ITSELF
    # a coupling or solver function registered as it is: the registry calls a factory
    # without parameters, and the function's own arguments are its inputs, not settings
    settable = settable and adapters.factory(entry.kind, factory) is factory
    skipped = RUNNER_PROVIDED | _services()
    signature = inspect.signature(factory)
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: fall back to the raw annotations
        hints = {}
    doc = _docstring(factory)
    parameters = []
    open_ended = False
    for name, param in signature.parameters.items():
        if param.kind is param.VAR_KEYWORD:
            open_ended = True
            continue
        if not settable or param.kind is param.VAR_POSITIONAL or name in skipped:
            continue
        required = param.default is param.empty
        parameters.append(
            ParameterInfo(
                name=name,
                type=_type_name(hints.get(name, param.annotation)),
                default=None if required else param.default,
                required=required,
                doc=parameter_doc(doc, name),
            )
        )
    summary = plain(_sentences(doc)[0]) if doc else ""
    return ComponentInfo(
        kind=entry.kind,
        name=entry.name,
        provider=entry.provider,
        summary=summary,
        parameters=tuple(parameters),
        open_ended=open_ended,
    )


def format_info(info: ComponentInfo) -> str:
    """A component's parameters as a short text block for the terminal."""
    lines = [f"{info.kind} '{info.name}' ({info.provider})"]
    if info.summary:
        lines.append(f"  {info.summary}")
    if not info.parameters:
        lines.append("  no parameters")
    for param in info.parameters:
        default = "required" if param.required else f"default {param.default!r}"
        lines.append(f"  {param.name}: {param.type}, {default}")
        if param.doc:
            lines.append(f"      {param.doc}")
    if info.open_ended:
        lines.append("  (also takes further keyword parameters, not listed by its signature)")
    return "\n".join(lines)
