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


def reversed_pairs(x0: torch.Tensor, x1: torch.Tensor):
    """A coupler as a plain function: noise i with data k - 1 - i."""
    index = torch.arange(len(x0))
    return index, index.flip(0)


class MeanNorm:
    """A metric with a parameter: the mean norm of the samples, times ``scale``."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, ctx) -> float:
        return self.scale * float(ctx.generated.norm(dim=1).mean())


def test_a_dict_config_takes_python_callables_as_components(tmp_path: Path) -> None:
    import tomllib

    from mfm_core.testing import TINY_CONFIG

    config = tomllib.loads(TINY_CONFIG)
    config["coupler"] = reversed_pairs
    config["eval"] |= {
        "metrics": ["w2", {"name": MeanNorm, "scale": 2.0}],
        "solvers": [{"name": "euler", "steps": 2}],
    }
    run = mfm_core.train(config, ["train.steps=3"], runs=tmp_path, name="inline")
    written = (run.run_dir / "config.toml").read_text()
    assert 'name = "reversed_pairs"' in written and 'name = "MeanNorm"' in written
    (row,) = run.metrics["samples"]
    assert row["MeanNorm"] > 0 and row["w2"] > 0 and len(run.log) == 3
    samples = run.sample(100, seed=1)
    assert row["MeanNorm"] == pytest.approx(2 * float(samples.x.norm(dim=1).mean()), rel=0.3)
    config["eval"]["metrics"] = ["w2", {"name": MeanNorm, "scal": 2.0}]
    with pytest.raises(ConfigError, match=r"\$\.eval\.metrics\[1\]\.scal: unknown key"):
        mfm_core.train(config, ["train.steps=1"], runs=tmp_path, name="bad")
