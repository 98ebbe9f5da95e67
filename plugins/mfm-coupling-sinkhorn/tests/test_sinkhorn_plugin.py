"""The plugin as mfm sees it: found through its entry point, built from TOML, run end to end.

The tests marked ``installed`` need the distribution installed
(``pip install -e plugins/mfm-coupling-sinkhorn``): they check the real entry point.
"""

from __future__ import annotations

import importlib.metadata
import json

import pytest
import torch
from mfm_core import ConfigError, Registry
from mfm_core.cli import main

import mfm_coupling_sinkhorn.plugin
from mfm_coupling_sinkhorn import SinkhornCoupler


@pytest.fixture
def registry(mfm_registry) -> Registry:
    """The built-ins and this plugin only, as a third-party author tests without installing
    (``mfm_registry`` comes from mfm's pytest plugin, ``mfm_core.testing``)."""
    return mfm_registry(mfm_coupling_sinkhorn.plugin)


def test_the_hook_registers_the_coupler_by_name(registry) -> None:
    assert "sinkhorn" in registry.names("coupler")
    assert registry.get("coupler", "sinkhorn").factory is SinkhornCoupler
    coupler = registry.create("coupler", "sinkhorn", {"reg": 0.1, "sample": "permutation"})
    assert isinstance(coupler.inner, SinkhornCoupler)
    assert coupler.reg == 0.1 and coupler.is_permutation
    coupling = coupler(torch.randn(8, 2), torch.randn(8, 2))
    assert sorted(coupling.j.tolist()) == list(range(8))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"reg": 0}, r"^\$\.coupler\.reg: must be a positive number, got 0"),
        ({"reg": "small"}, r"^\$\.coupler\.reg: expected a number, got 'small'"),
        ({"sample": "all"}, r"^\$\.coupler\.sample: expected one of 'plan', 'permutation'"),
        ({"reg_mode": "auto"}, r"^\$\.coupler\.reg_mode: expected one of 'relative'"),
        ({"max_iter": 0}, r"^\$\.coupler\.max_iter: must be at least 1, got 0"),
        ({"regg": 0.1}, r"^\$\.coupler\.regg: unknown key; did you mean 'reg'\?"),
    ],
)
def test_bad_tables_are_config_errors_with_key_paths(registry, params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        registry.create("coupler", "sinkhorn", params)


def installed() -> importlib.metadata.EntryPoint:
    points = importlib.metadata.entry_points(group="mfm.plugins", name="sinkhorn")
    assert points, "install the plugin first: pip install -e plugins/mfm-coupling-sinkhorn"
    return next(iter(points))


def test_the_entry_point_names_the_plugin_module() -> None:
    point = installed()
    assert point.value == "mfm_coupling_sinkhorn.plugin"
    assert point.dist is not None and point.dist.name == "mfm-coupling-sinkhorn"
    assert point.load() is mfm_coupling_sinkhorn.plugin


def test_mfm_plugins_lists_the_installed_coupler(capsys) -> None:
    installed()
    assert main(["plugins", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(row["kind"], row["name"]): row for row in report["components"]}
    assert rows["coupler", "sinkhorn"] == {
        "kind": "coupler",
        "name": "sinkhorn",
        "distribution": "mfm-coupling-sinkhorn",
        "version": importlib.metadata.version("mfm-coupling-sinkhorn"),
        "plugin": "sinkhorn",
    }
    assert "sinkhorn" not in report["broken"]


def test_a_config_naming_sinkhorn_validates_and_runs(mfm_tiny_config, tmp_path, capsys) -> None:
    installed()
    overrides = ["coupler.name=sinkhorn", "coupler.reg=0.02", "train.steps=12"]
    assert main(["validate", str(mfm_tiny_config), *overrides]) == 0
    out = capsys.readouterr().out
    assert "coupler      sinkhorn (mfm-coupling-sinkhorn" in out

    runs = tmp_path / "runs"
    assert main(["run", str(mfm_tiny_config), *overrides, "--runs", str(runs), "--quiet"]) == 0
    (run_dir,) = runs.iterdir()
    assert 'name = "sinkhorn"' in (run_dir / "config.toml").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["final_loss"] > 0


@pytest.mark.parametrize("sample", ["plan", "permutation"])
def test_a_few_steps_train_in_an_isolated_registry(mfm_train, sample) -> None:
    run = mfm_train(
        "coupler.name=sinkhorn", f"coupler.sample={sample}", plugins=[mfm_coupling_sinkhorn.plugin]
    )
    assert len(run.losses) == 3 and run.metrics["final_loss"] > 0
