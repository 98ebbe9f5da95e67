"""The component registry: plugins discovered from entry points, components built by name.

Plugins are loaded one entry point at a time from the group ``mfm.plugins``; a plugin that
fails to import is reported by name and the rest keep working (``MFM_STRICT_PLUGINS=1``
makes it an error). The built-in components come in through the same entry point mechanism.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import importlib.metadata
import inspect
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs
import pluggy

from mfm_core import adapters, hookspecs
from mfm_core.errors import ConfigError, PluginError, UnknownComponentError
from mfm_core.schema import InvalidValue, params_class, structure

ENTRY_POINT_GROUP = "mfm.plugins"

HOOKS = {
    "coupler": "register_couplers",
    "path": "register_paths",
    "vector_field": "register_vector_fields",
    "solver": "register_solvers",
    "dataset": "register_datasets",
    "metric": "register_metrics",
    "cost": "register_costs",
    "feature_map": "register_feature_maps",
    "tracker": "register_trackers",
}
KINDS = tuple(HOOKS)

FIRST_PARTY_PLUGINS = {
    ("coupler", "sinkhorn"): "mfm-coupling-sinkhorn",
    ("tracker", "mlflow"): "mfm-tracker-mlflow",
    ("tracker", "wandb"): "mfm-tracker-wandb",
}
"""Components shipped as separate distributions under ``plugins/`` of the mfm repository."""


@attrs.frozen
class MissingService:
    """A service the runner cannot give: ``message`` is the error when a factory needs it."""

    message: str


class PluginWarning(UserWarning):
    """A plugin could not be loaded; its components are unavailable."""


@attrs.frozen(kw_only=True)
class Entry:
    """One registered component and where it comes from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str | None = None
    version: str | None = None

    @property
    def provider(self) -> str:
        if self.distribution is None:
            return f"plugin '{self.plugin}'"
        return f"{self.distribution} {self.version}"

    def describe(self) -> str:
        """``coupler 'reverse' (plugin 'reverse' of mfm-coupler-reverse 0.1.0)``: what an error
        about this component names."""
        origin = f" of {self.distribution} {self.version}" if self.distribution else ""
        return f"{self.kind} '{self.name}' (plugin '{self.plugin}'{origin})"


def strict_plugins() -> bool:
    return os.environ.get("MFM_STRICT_PLUGINS", "") not in ("", "0")


class Registry:
    """Registered components by kind and name.

    ``Registry()`` loads every installed plugin; ``Registry(load_entry_points=False)`` starts
    empty, and ``add_plugin`` registers plugin objects directly (tests do this).
    """

    def __init__(self, *, load_entry_points: bool = True, strict: bool | None = None) -> None:
        self.strict = strict_plugins() if strict is None else strict
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._origins: dict[str, tuple[str | None, str | None]] = {}
        self._entries: dict[str, dict[str, Entry]] | None = None
        self.broken: dict[str, str] = {}
        if load_entry_points:
            self._load_entry_points()

    def add_plugin(
        self,
        plugin: object,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        """Register a plugin object (a module or any object with ``@hookimpl`` methods)."""
        name = self._pm.register(plugin, name=name)
        self._origins[name] = (distribution, version)
        self._entries = None
        try:  # a misspelt hook name would otherwise register nothing, silently
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(name=name)
            raise PluginError(f"plugin '{name}' defines an unknown hook: {exc}") from None

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            try:
                self.add_plugin(ep.load(), ep.name, distribution=dist, version=version)
            except KeyboardInterrupt:
                raise
            # SystemExit too: a plugin calling sys.exit() at import must not end mfm silently.
            except BaseException as exc:
                self._report_broken(ep.name, f"from {dist or 'unknown distribution'}", exc)

    def _report_broken(self, plugin: str, where: str, exc: BaseException) -> None:
        message = f"plugin '{plugin}' ({where}) failed to load: {type(exc).__name__}: {exc}"
        if self.strict:
            raise PluginError(message) from exc
        self.broken[plugin] = message
        warnings.warn(
            f"{message}; its components are unavailable "
            "(set MFM_STRICT_PLUGINS=1 to make this an error)",
            PluginWarning,
            stacklevel=3,
        )

    @property
    def entries(self) -> dict[str, dict[str, Entry]]:
        """Every registered component: ``entries[kind][name]``."""
        if self._entries is None:
            self._entries = self._collect()
        return self._entries

    def _collect(self) -> dict[str, dict[str, Entry]]:
        entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind, hook_name in HOOKS.items():
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name in self.broken:
                    continue
                register = functools.partial(self._add_entry, entries[kind], kind, impl.plugin_name)
                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except (PluginError, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    distribution = self._origins.get(impl.plugin_name, (None, None))[0] or "code"
                    self._report_broken(impl.plugin_name, f"{hook_name} in {distribution}", exc)
                    # start again without the broken plugin's partial registrations
                    return self._collect()
        return entries

    def _add_entry(
        self,
        registered: dict[str, Entry],
        kind: str,
        plugin: str,
        name: str,
        factory: Callable[..., Any],
    ) -> None:
        """The ``register(name, factory)`` callback a plugin's hook receives (bound by
        ``_collect`` to the kind and the plugin)."""
        distribution, version = self._origins.get(plugin, (None, None))
        entry = Entry(
            kind=kind,
            name=name,
            factory=factory,
            plugin=plugin,
            distribution=distribution,
            version=version,
        )
        previous = registered.get(name)
        if previous is not None:
            raise PluginError(
                f"{kind} '{name}' is registered twice: by {previous.provider} "
                f"and by {entry.provider}; uninstall one of them"
            )
        registered[name] = entry

    def names(self, kind: str) -> list[str]:
        return sorted(self._kind(kind))

    def _kind(self, kind: str) -> dict[str, Entry]:
        if kind not in HOOKS:
            raise ConfigError(f"unknown component kind '{kind}'; kinds are {', '.join(KINDS)}")
        return self.entries[kind]

    def get(self, kind: str, name: str, path: str | None = None) -> Entry:
        """The entry for ``name``; an unknown name is an error that lists the choices."""
        registered = self._kind(kind)
        if name in registered:
            return registered[name]
        where = f"{path}.name: " if path else ""
        package = FIRST_PARTY_PLUGINS.get((kind, name))
        if package is not None:
            raise UnknownComponentError(
                f"{where}{kind} '{name}' is provided by the plugin package {package}, which is "
                f"not installed: pip install {package} (or, from a checkout of mfm, "
                f"pip install ./plugins/{package})"
            )
        close = difflib.get_close_matches(name, list(registered), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "."
        available = ", ".join(sorted(registered)) or "none"
        broken = (
            f" (Plugins that failed to load, whose components are missing: "
            f"{', '.join(sorted(self.broken))}.)"
            if self.broken
            else ""
        )
        raise UnknownComponentError(
            f"{where}unknown {kind} '{name}'{hint} Available: {available}. "
            f"Run `mfm plugins` to see every installed component.{broken}"
        )

    def check(
        self,
        kind: str,
        name: str,
        params: dict[str, Any] | None = None,
        *,
        path: str | None = None,
        provided: tuple[str, ...] = (),
    ) -> None:
        """Check a component's table as :meth:`create` does, without building it: for a
        component built later from what only a run has (a tracker needs the run directory),
        so that ``mfm validate`` and the start of a run report its mistakes. ``provided``:
        the keywords mfm gives the factory."""
        path = path or f"$.{kind}"
        factory = adapters.factory(kind, self.get(kind, name, path).factory)
        _checked_params(factory, dict(params or {}), dict.fromkeys(provided), path)

    def create(
        self,
        kind: str,
        name: str,
        params: dict[str, Any] | None = None,
        *,
        path: str | None = None,
        provided: dict[str, Any] | None = None,
        services: Mapping[str, Any] | None = None,
    ) -> Any:
        """Build a component from its TOML parameters.

        ``params`` are checked against the factory's keyword parameters (names, types,
        required keys); problems are reported under ``path`` (default: the kind).
        ``provided`` are keywords the runner supplies itself (e.g. ``data_shape``); a
        config may not set them. ``services`` are offered: each goes to a factory that takes
        a keyword of its name and whose table does not set it (e.g. ``load_teacher``, or
        ``root`` from ``data.root``); a :class:`MissingService` is the error to report when a
        factory requires that keyword and nothing gives it. The factory runs with this
        registry as ``current_registry()``, so the parts it names resolve here. Couplers,
        solvers and paths come back adapted and checked (``mfm_core.adapters``).
        """
        path = path or f"$.{kind}"
        entry = self.get(kind, name, path)
        params = dict(params or {})
        provided = dict(provided or {})
        factory = adapters.factory(kind, entry.factory)
        keywords = inspect.signature(factory).parameters
        for key, value in (services or {}).items():
            if key not in keywords or key in params or key in provided:
                continue
            if isinstance(value, MissingService):
                if keywords[key].default is inspect.Parameter.empty:
                    raise ConfigError(value.message)
                continue
            provided[key] = value
        params = _checked_params(factory, params, provided, path)
        token = _building.set(self)
        try:
            component = factory(**params, **provided)
        except InvalidValue as exc:  # a factory naming the parameter that is wrong
            raise ConfigError(f"{path}.{exc.name}: {exc.message}") from exc
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        except TypeError as exc:  # the factory does not follow its protocol: the plugin's bug
            raise PluginError(
                f"{path}: {kind} '{name}' from {entry.provider} could not be built: {exc}"
            ) from exc
        finally:
            _building.reset(token)
        return adapters.adapt(kind, component, entry.describe(), entry.name, params)


def _checked_params(
    factory: Callable[..., Any], params: dict[str, Any], provided: dict[str, Any], path: str
) -> dict[str, Any]:
    """``params`` structured into the factory's keyword parameters: unknown keys, missing
    required keys and wrong types raise ConfigError naming ``path``; keys that mfm
    ``provided`` may not be set."""
    clash = sorted(set(params) & set(provided))
    if clash:
        raise ConfigError(f"{path}.{clash[0]}: set by mfm from the rest of the config; remove it")
    cls = params_class(factory, exclude=tuple(provided))
    if cls is None:
        return params
    checked = structure(params, cls, path)
    return {a.name: getattr(checked, a.name) for a in attrs.fields(cls)}


_building: contextvars.ContextVar[Registry | None] = contextvars.ContextVar(
    "mfm_building", default=None
)
_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry of installed plugins (loaded on first use)."""
    global _default
    if _default is None:
        _default = Registry()
    return _default


def current_registry() -> Registry:
    """The registry that is building a component right now, else the process-wide one.

    A component resolves the named parts it is given (a coupler's ``cost``, reflow's
    ``solver``) through this in its constructor, so that a component built by an isolated
    registry sees only what that registry holds.
    """
    return _building.get() or get_registry()


@contextlib.contextmanager
def using_registry(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the process-wide one inside the ``with`` block (a run started there
    builds its components through it); the previous one comes back afterwards."""
    global _default
    previous, _default = _default, registry
    try:
        yield registry
    finally:
        _default = previous


def create(kind: str, name: str, /, **params: Any) -> Any:
    """Build a registered component from Python: ``create("coupler", "exact", cost="l1")``."""
    return get_registry().create(kind, name, params)


def describe(registry: Registry) -> Iterable[Entry]:
    """Every entry, sorted by kind then name."""
    for kind in KINDS:
        yield from (registry.entries[kind][name] for name in sorted(registry.entries[kind]))
