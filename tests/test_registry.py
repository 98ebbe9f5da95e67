"""The plugin registry: discovery, creation by name, conflicts, unknown names, broken plugins."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

import mfm_core
from mfm_core import hookimpl
from mfm_core.errors import ConfigError, PluginError, UnknownComponentError
from mfm_core.registry import ENTRY_POINT_GROUP, PluginWarning, Registry


class Doubler:
    """A toy coupler with one typed parameter: pairs noise i with data (factor * i) mod k."""

    def __init__(self, *, factor: int = 2) -> None:
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = factor

    def __call__(self, x0, x1):
        i = torch.arange(len(x0))
        return i, (self.factor * i) % len(x0)


class ToyPlugin:
    @hookimpl
    def register_couplers(self, register):
        register("doubler", Doubler)


class OtherToyPlugin:
    @hookimpl
    def register_couplers(self, register):
        register("doubler", Doubler)


class BrokenPlugin:
    @hookimpl
    def register_couplers(self, register):
        raise RuntimeError("boom")


def fresh(*plugins, strict=False) -> Registry:
    registry = Registry(load_entry_points=False, strict=strict)
    for index, plugin in enumerate(plugins):
        registry.add_plugin(plugin, f"p{index}", distribution=f"dist{index}", version="1.0")
    return registry


def test_plugin_object_registers_and_builds_components():
    registry = fresh(ToyPlugin())
    built = registry.create("coupler", "doubler", {"factor": 3})
    assert isinstance(built.inner, Doubler) and built.factor == 3
    assert built(torch.zeros(4, 1), torch.zeros(4, 1)).j.tolist() == [0, 3, 2, 1]
    entry = registry.get("coupler", "doubler")
    assert (entry.distribution, entry.version, entry.plugin) == ("dist0", "1.0", "p0")
    assert registry.names("coupler") == ["doubler"]
    assert registry.names("solver") == []


def test_same_name_from_two_packages_is_an_error_naming_both():
    registry = fresh(ToyPlugin(), OtherToyPlugin())
    with pytest.raises(PluginError) as info:
        registry.names("coupler")
    message = str(info.value)
    assert "coupler 'doubler' is registered twice" in message
    assert "dist0 1.0" in message and "dist1 1.0" in message


def test_unknown_name_lists_choices_closest_match_and_points_to_mfm_plugins():
    registry = fresh(ToyPlugin())
    with pytest.raises(UnknownComponentError) as info:
        registry.create("coupler", "dubler", path="$.coupler")
    message = str(info.value)
    assert message.startswith("$.coupler.name: unknown coupler 'dubler'")
    assert "did you mean 'doubler'?" in message
    assert "Available: doubler" in message
    assert "mfm plugins" in message


def test_unknown_kind_is_an_error():
    with pytest.raises(ConfigError, match="unknown component kind 'couplers'"):
        fresh().names("couplers")


def test_broken_hook_is_reported_by_name_and_others_keep_working():
    registry = fresh(BrokenPlugin(), OtherToyPlugin())
    with pytest.warns(PluginWarning, match=r"plugin 'p0' .*RuntimeError: boom"):
        names = registry.names("coupler")
    assert names == ["doubler"]
    assert "p0" in registry.broken
    with pytest.raises(UnknownComponentError, match=r"failed to load, whose components .*: p0"):
        registry.get("coupler", "other")


def test_strict_mode_turns_a_broken_plugin_into_an_error(monkeypatch):
    monkeypatch.setenv("MFM_STRICT_PLUGINS", "1")
    registry = Registry(load_entry_points=False)
    registry.add_plugin(BrokenPlugin(), "p0")
    with pytest.raises(PluginError, match="boom"):
        registry.names("coupler")


def _fake_entry_points(monkeypatch, *entry_points):
    def entry_points_for(group):
        assert group == ENTRY_POINT_GROUP
        return list(entry_points)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points_for)


def test_entry_point_that_fails_to_import_is_a_warning_and_builtins_still_load(monkeypatch):
    _fake_entry_points(
        monkeypatch,
        importlib.metadata.EntryPoint("broken", "no_such_module_xyz", ENTRY_POINT_GROUP),
        importlib.metadata.EntryPoint("builtin", "mfm_core.default_plugins", ENTRY_POINT_GROUP),
    )
    with pytest.warns(PluginWarning, match="plugin 'broken'.*ModuleNotFoundError"):
        registry = Registry(strict=False)
    assert "exact" in registry.names("coupler")
    assert list(registry.broken) == ["broken"]


def test_entry_point_that_fails_to_import_is_an_error_in_strict_mode(monkeypatch):
    _fake_entry_points(
        monkeypatch,
        importlib.metadata.EntryPoint("broken", "no_such_module_xyz", ENTRY_POINT_GROUP),
    )
    with pytest.raises(PluginError, match="plugin 'broken'"):
        Registry(strict=True)


def test_builtins_come_from_the_core_distribution_entry_point():
    registry = Registry()
    expected = {
        "coupler": {"independent", "exact"},
        "path": {"cond-ot"},
        "vector_field": {"mlp"},
        "solver": {"euler", "midpoint", "heun", "rk4", "dopri5"},
        "dataset": {
            "gaussian",
            "8gaussians",
            "moons",
            "checkerboard",
            "circles",
            "spirals",
            "file",
        },
        "metric": {"w2", "fid"},
        "feature_map": {"pixels", "inception"},
        "tracker": {"tensorboard"},
    }
    for kind, names in expected.items():
        assert names <= set(registry.names(kind)), kind
    entry = registry.get("coupler", "exact")
    assert entry.distribution == "mfm" and entry.plugin == "builtin"


def test_params_are_checked_against_the_factory_signature():
    registry = fresh(ToyPlugin())
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.factor: expected an integer, got 'x'"):
        registry.create("coupler", "doubler", {"factor": "x"})
    with pytest.raises(ConfigError, match=r"\$\.coupler\.facter: unknown key; did you mean"):
        registry.create("coupler", "doubler", {"facter": 2})
    with pytest.raises(ConfigError, match=r"^\$\.coupler: factor must be >= 1, got 0"):
        registry.create("coupler", "doubler", {"factor": 0})


def test_keywords_the_runner_provides_cannot_be_set_in_the_config():
    registry = Registry()
    with pytest.raises(ConfigError, match=r"\$\.model\.data_shape: set by mfm"):
        registry.create(
            "vector_field",
            "mlp",
            {"data_shape": [2]},
            path="$.model",
            provided={"data_shape": (2,)},
        )


def test_create_from_python_uses_the_installed_plugins():
    coupler = mfm_core.create("coupler", "exact", cost="l1")
    assert coupler.cost == "l1"
    with pytest.raises(ConfigError, match="cost"):
        mfm_core.create("coupler", "exact", cost="manhattan")


class MisspeltHookPlugin:
    @hookimpl
    def register_coupler(self, register):  # the hook is register_couplers
        register("never", Doubler)


def test_a_misspelt_hook_is_an_error_not_silence():
    registry = Registry(load_entry_points=False)
    with pytest.raises(
        PluginError, match="plugin 'oops' defines an unknown hook.*register_coupler"
    ):
        registry.add_plugin(MisspeltHookPlugin(), "oops")
    assert registry.names("coupler") == []


def test_unknown_name_without_a_close_match():
    message = ""
    try:
        fresh(ToyPlugin()).create("coupler", "zzz")
    except UnknownComponentError as exc:
        message = str(exc)
    assert message.startswith("$.coupler.name: unknown coupler 'zzz'. Available: doubler.")


class NoDataShape:
    def __init__(self, *, width: int = 3) -> None:
        self.width = width


class BadFactoryPlugin:
    @hookimpl
    def register_vector_fields(self, register):
        register("bad", lambda **params: NoDataShape(**params))


def test_a_factory_that_breaks_its_protocol_is_reported_as_the_plugins_fault():
    registry = fresh(BadFactoryPlugin())
    with pytest.raises(PluginError, match=r"\$\.model: vector_field 'bad' from dist0 1\.0"):
        registry.create("vector_field", "bad", {}, path="$.model", provided={"data_shape": (2,)})


def test_a_first_party_plugin_that_is_not_installed_is_named() -> None:
    registry = Registry(load_entry_points=False)
    with pytest.raises(UnknownComponentError, match="pip install ./plugins/mfm-coupling-sinkhorn"):
        registry.get("coupler", "sinkhorn", "$.coupler")


def _module_entry_point(monkeypatch, tmp_path, name: str, source: str):
    """An entry point ``name`` whose module holds ``source``, with the built-ins beside it."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    _fake_entry_points(
        monkeypatch,
        importlib.metadata.EntryPoint(name, name, ENTRY_POINT_GROUP),
        importlib.metadata.EntryPoint("builtin", "mfm_core.default_plugins", ENTRY_POINT_GROUP),
    )


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("import sys\nsys.exit(0)\n", "SystemExit: 0"),
        ("raise SystemExit('bye')\n", "SystemExit: bye"),
        ("class Odd(BaseException):\n    pass\nraise Odd('odd')\n", "Odd: odd"),
    ],
)
def test_a_plugin_raising_any_base_exception_at_import_is_a_broken_plugin(
    monkeypatch, tmp_path, source, shown
):
    name = f"mfm_exiting_{abs(hash(source))}"
    _module_entry_point(monkeypatch, tmp_path, name, source)
    with pytest.warns(PluginWarning, match=f"plugin '{name}' .* failed to load: {shown}"):
        registry = Registry(strict=False)
    assert "exact" in registry.names("coupler")
    assert list(registry.broken) == [name]

    with pytest.raises(PluginError, match=f"plugin '{name}' .* failed to load: {shown}"):
        Registry(strict=True)


def test_keyboard_interrupt_while_loading_a_plugin_is_not_swallowed(monkeypatch, tmp_path):
    _module_entry_point(monkeypatch, tmp_path, "mfm_interrupted", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        Registry(strict=False)


class ExitingHookPlugin:
    @hookimpl
    def register_couplers(self, register):
        raise SystemExit(3)


def test_a_hook_raising_system_exit_is_a_broken_plugin():
    registry = fresh(ExitingHookPlugin(), OtherToyPlugin())
    with pytest.warns(PluginWarning, match=r"plugin 'p0' .*SystemExit: 3"):
        assert registry.names("coupler") == ["doubler"]


class ManhattanPlugin:
    """A cost of its own, and nothing else."""

    @hookimpl
    def register_costs(self, register):
        register("manhattan", lambda a, b: torch.cdist(a, b, p=1.0))


def test_a_coupler_resolves_its_cost_through_the_registry_that_builds_it():
    import mfm_core.default_plugins

    isolated = Registry(load_entry_points=False)
    isolated.add_plugin(mfm_core.default_plugins, "builtin")
    isolated.add_plugin(ManhattanPlugin(), "manhattan")
    coupler = isolated.create("coupler", "exact", {"cost": "manhattan"})
    x0, x1 = torch.randn(6, 2), torch.randn(6, 2)
    assert coupler(x0, x1).cost == pytest.approx(
        mfm_core.create("coupler", "exact", cost="l1")(x0, x1).cost
    )
    # the process-wide registry does not hold the isolated registry's cost
    with pytest.raises(ConfigError, match=r"cost: expected one of the installed costs"):
        mfm_core.create("coupler", "exact", cost="manhattan")

    # and an isolated registry without the built-in costs does not see the process's
    class Identity(mfm_core.PairCoupler):
        def pairs(self, costs, x0, x1):
            return torch.arange(len(x0)), torch.arange(len(x0))

    class IdentityPlugin:
        @hookimpl
        def register_couplers(self, register):
            register("identity", Identity)

    bare = Registry(load_entry_points=False)
    bare.add_plugin(ManhattanPlugin(), "manhattan")
    bare.add_plugin(IdentityPlugin(), "identity")
    assert bare.create("coupler", "identity", {"cost": "manhattan"}).cost == "manhattan"
    with pytest.raises(ConfigError, match=r"installed costs 'manhattan', got 'sqeuclidean'"):
        bare.create("coupler", "identity")
