"""The Python API: docs/python.md's example runs as written, and the API's errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import mfm_core
from mfm_core.errors import ConfigError

DOC = Path(__file__).parents[1] / "docs" / "python.md"


def test_the_documented_example_runs(capsys) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    exec(compile(code, str(DOC), "exec"), {})
    assert capsys.readouterr().out.startswith("torch.Size([500, 2]) 1 ")


def test_sampling_a_tiny_run(tiny_run: Path) -> None:
    run = mfm_core.load_run(tiny_run)
    assert run.step == 40 and isinstance(run.model, torch.nn.Module)
    first = run.sample(50, solver={"name": "euler", "steps": 2}, seed=3)
    assert first.x.shape == (50, 2) and first.nfe == 2 and first.labels is None
    again = run.sample(50, solver="euler", seed=3)  # euler's default is 8 steps
    assert again.nfe == 8 and not torch.equal(first.x, again.x)
    with pytest.raises(ConfigError, match="not class-conditional"):
        run.sample(5, labels=1)
    with pytest.raises(ConfigError, match="positive number"):
        run.sample(0)
    with pytest.raises(ConfigError, match="needs a 'name'"):
        run.sample(5, solver={"steps": 2})


def test_a_loaded_run_carries_its_metrics_and_loss_log_and_is_its_path(tiny_run: Path) -> None:
    import json

    from mfm_core.runner.rundir.layout import read_log

    run = mfm_core.load_run(tiny_run)
    assert run.metrics == json.loads((tiny_run / "metrics.json").read_text())
    assert run.log == read_log(tiny_run) and len(run.log) == 40
    assert Path(run) == tiny_run and mfm_core.load_run(run).step == 40
