"""A third-party plugin, found the way an installed one is: through entry-point metadata.

The example distribution in docs/examples/mfm-coupler-reverse is "installed" without pip: its
package and a ``*.dist-info`` directory (METADATA and entry_points.txt, what pip writes) are
put on PYTHONPATH of a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mfm_core.default_plugins
from mfm_core import ConfigError, Coupler, Registry
from mfm_core.runner.run import validate_config

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "mfm-coupler-reverse"


def write_dist_info(root: Path, name: str, version: str, entry_point: str) -> None:
    """The metadata of an installed distribution that declares one ``mfm.plugins`` entry point."""
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[mfm.plugins]\n{entry_point}\n")


def mfm(site: Path, *args: str, strict: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m mfm_core ARGS`` with ``site`` first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("MFM_STRICT_PLUGINS", "MFM_TRACEBACK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    if strict:
        env["MFM_STRICT_PLUGINS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "mfm_core", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_installed_plugin_is_listed_with_its_distribution_and_usable_from_toml(
    tmp_path, tiny_config
):
    site = tmp_path / "site"
    shutil.copytree(
        EXAMPLE / "mfm_coupler_reverse",
        site / "mfm_coupler_reverse",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    write_dist_info(site, "mfm-coupler-reverse", "0.1.0", "reverse = mfm_coupler_reverse")

    listed = mfm(site, "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    rows = {(row["kind"], row["name"]): row for row in report["components"]}
    assert rows["coupler", "reverse"] == {
        "kind": "coupler",
        "name": "reverse",
        "distribution": "mfm-coupler-reverse",
        "version": "0.1.0",
        "plugin": "reverse",
    }
    assert rows["coupler", "exact"]["distribution"] == "mfm"
    assert report["broken"] == {}

    checked = mfm(site, "validate", str(tiny_config), "coupler.name=reverse", "coupler.shift=1")
    assert checked.returncode == 0, checked.stderr
    assert "coupler      reverse (mfm-coupler-reverse 0.1.0)" in checked.stdout


def test_plugin_that_fails_to_import_is_a_warning_unless_strict(tmp_path):
    write_dist_info(tmp_path, "mfm-ghost", "0.1.0", "ghost = mfm_ghost_not_installed")

    listed = mfm(tmp_path, "plugins")
    assert listed.returncode == 0, listed.stderr
    warning = "warning: plugin 'ghost' (from mfm-ghost) failed to load: ModuleNotFoundError"
    assert any(line.startswith(warning) for line in listed.stderr.splitlines()), listed.stderr
    rows = [line.split()[:3] for line in listed.stdout.splitlines()]
    assert ["coupler", "exact", "mfm"] in rows
    assert "broken: plugin 'ghost' (from mfm-ghost)" in listed.stdout

    strict = mfm(tmp_path, "plugins", strict=True)
    assert strict.returncode == 2
    assert strict.stderr.startswith("error: plugin 'ghost' (from mfm-ghost) failed to load")
    assert "Traceback" not in strict.stderr and strict.stdout == ""


@pytest.fixture
def reverse_plugin(monkeypatch):
    """The example plugin module, imported from the docs without installing it."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # keep docs/ free of __pycache__
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import mfm_coupler_reverse

    yield mfm_coupler_reverse
    sys.modules.pop("mfm_coupler_reverse", None)


def test_reverse_coupler_pairs_i_with_k_minus_1_minus_i(reverse_plugin):
    registry = Registry(load_entry_points=False)
    registry.add_plugin(reverse_plugin)
    assert registry.names("coupler") == ["reverse"]

    x0, x1 = torch.randn(5, 2), torch.randn(5, 2)
    coupler = registry.create("coupler", "reverse")
    assert isinstance(coupler, Coupler)
    i, j = coupler(x0, x1)
    assert i.tolist() == [0, 1, 2, 3, 4] and j.tolist() == [4, 3, 2, 1, 0]
    shifted = registry.create("coupler", "reverse", {"shift": 1})(x0, x1)
    assert shifted.j.tolist() == [0, 4, 3, 2, 1]
    assert shifted.is_permutation and shifted.cost is None


def test_reverse_coupler_parameters_are_checked_with_key_paths(reverse_plugin, tiny_config):
    registry = Registry(load_entry_points=False)
    registry.add_plugin(reverse_plugin)
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.shift: expected an integer, got 1\.5"):
        registry.create("coupler", "reverse", {"shift": 1.5})
    with pytest.raises(ConfigError, match=r"^\$\.coupler\.shfit: unknown key; did you mean"):
        registry.create("coupler", "reverse", {"shfit": 1})
    with pytest.raises(ConfigError, match=r"^\$\.coupler: shift must be zero or positive, got -1"):
        registry.create("coupler", "reverse", {"shift": -1})

    registry.add_plugin(mfm_core.default_plugins)
    lines = validate_config(tiny_config, ["coupler.name=reverse"], registry)
    assert "coupler      reverse (plugin 'mfm_coupler_reverse')" in lines
