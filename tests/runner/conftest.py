"""Fixtures of the runner's tests: the tiny image plugin, in this process or installed for a
subprocess, and a config that trains on it in a second."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

import mfm_core.registry
from mfm_core.registry import Registry

PLUGIN = Path(__file__).with_name("tiny_plugin.py")

TINY_IMAGES = """
[data]
source = { name = "gaussian", shape = [3, 8, 8] }
target = { name = "tiny-images", size = 64, num_classes = 4 }
root = "unused"
workers = 0

[coupler]
name = "exact"

[model]
name = "tiny-field"
num_classes = 4

[solver]
name = "euler"
steps = 2

[train]
steps = 12
batch_size = 8
lr = 1e-3
seed = 5
device = "cpu"
checkpoint_every = 4
keep_checkpoints = 5
ema = 0.9
cond_drop = 0.25

[eval]
grid = 4
loss_batches = 2
guidance = 1.5
solvers = [{ name = "euler", steps = 1 }, { name = "euler", steps = 2 }]
"""


@pytest.fixture
def tiny_plugin(monkeypatch) -> Registry:
    """The process-wide registry with the tiny image plugin added."""
    spec = importlib.util.spec_from_file_location("tiny_plugin", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    registry = Registry()
    registry.add_plugin(module, "tiny")
    monkeypatch.setattr(mfm_core.registry, "_default", registry)
    return registry


@pytest.fixture
def image_config(tmp_path: Path) -> Path:
    path = tmp_path / "tinyimg.toml"
    path.write_text(TINY_IMAGES)
    return path


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a subprocess in which the tiny plugin is installed (a module and
    the dist-info metadata of its entry point, on PYTHONPATH)."""
    site = tmp_path / "site"
    dist_info = site / "mfm_tiny-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (site / "tiny_plugin.py").write_text(PLUGIN.read_text())
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: mfm-tiny\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[mfm.plugins]\ntiny = tiny_plugin\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MFM_TRACEBACK", "RANK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env
