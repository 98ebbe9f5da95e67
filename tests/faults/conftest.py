"""Fixtures of the fault tests: a run that trains in well under a second, and the CLI's
answer to a command as (exit status, stderr lines)."""

from __future__ import annotations

import contextlib
import types
from pathlib import Path
from typing import Any

import pytest

from mfm_core import hookimpl
from mfm_core.cli import main
from mfm_core.registry import Registry, using_registry
from mfm_core.runner.run import start_run
from tests.faults.helpers import FAST


@pytest.fixture
def fast_config(tmp_path: Path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(FAST)
    return path


@pytest.fixture
def trained(fast_config: Path, tmp_path: Path) -> Path:
    """A run of two steps, trained and evaluated."""
    return start_run(fast_config, ["train.steps=2"], tmp_path / "runs", progress=False)


@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli(*argv)`` -> (exit status, stderr lines) of ``mfm argv`` in this process."""
    monkeypatch.delenv("MFM_TRACEBACK", raising=False)
    monkeypatch.delenv("RANK", raising=False)

    def run(*argv: str) -> tuple[int, list[str]]:
        capsys.readouterr()
        status = main([str(a) for a in argv])
        return status, capsys.readouterr().err.strip().splitlines()

    return run


@pytest.fixture
def coupler_plugin():
    """``coupler_plugin(name, coupler)``: a registry in which the plugin ``name`` registers
    ``coupler`` under ``name``, the process-wide one for the rest of the test."""
    with contextlib.ExitStack() as held:

        def install(name: str, coupler: Any) -> None:
            plugin = types.ModuleType(name)

            @hookimpl
            def register_couplers(register):
                register(name, coupler)

            plugin.register_couplers = register_couplers
            registry = Registry()
            registry.add_plugin(plugin, name)
            held.enter_context(using_registry(registry))

        yield install
