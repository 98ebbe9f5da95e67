"""The plugin as mfm sees it: found through its entry point, built from TOML, run end to end.

The tests marked ``installed`` need the distribution installed
(``pip install -e plugins/mfm-coupling-sinkhorn``): they check the real entry point.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
import torch
from mfm_core import ConfigError, Registry
from mfm_core.cli import main

import mfm_coupling_sinkhorn.plugin
from mfm_coupling_sinkhorn import SinkhornCoupler

TINY = """
[data]
source = { name = "gaussian", shape = [2] }
target = "checkerboard"

[coupler]
name = "sinkhorn"
reg = 0.02

[model]
name = "mlp"
hidden = [16, 16]

[solver]
name = "euler"
steps = 2

[train]
steps = 12
batch_size = 64
lr = 1e-3
seed = 3
device = "cpu"
checkpoint_every = 12

[eval]
num_samples = 64
loss_batches = 1
trajectories = 4
metrics = ["w2"]
solvers = [{ name = "euler", steps = 1 }]
"""


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def registry() -> Registry:
    """A registry holding only this plugin, as a third-party author tests without installing."""
    registry = Registry(load_entry_points=False)
    registry.add_plugin(mfm_coupling_sinkhorn.plugin)
    return registry


def test_the_hook_registers_the_coupler_by_name(registry) -> None:
    assert registry.names("coupler") == ["sinkhorn"]
    coupler = registry.create("coupler", "sinkhorn", {"reg": 0.1, "sample": "permutation"})
    assert isinstance(coupler, SinkhornCoupler)
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


def test_a_config_naming_sinkhorn_validates_and_runs(tiny_config, tmp_path, capsys) -> None:
    installed()
    assert main(["validate", str(tiny_config), "coupler.sample=permutation"]) == 0
    out = capsys.readouterr().out
    assert "coupler      sinkhorn (mfm-coupling-sinkhorn" in out

    runs = tmp_path / "runs"
    assert main(["run", str(tiny_config), "--runs", str(runs), "--quiet"]) == 0
    (run_dir,) = runs.iterdir()
    assert 'name = "sinkhorn"' in (run_dir / "config.toml").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["final_loss"] > 0
