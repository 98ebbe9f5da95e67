"""CUDA paths, run with `pytest -m gpu` on a machine with a CUDA device (skipped without)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from mfm_core.couplers import ExactCoupler, StableCoupler
from mfm_core.testing import check_coupler

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", ["scipy", "emd"])
def test_exact_coupler_on_the_device(backend):
    check_coupler(ExactCoupler(backend=backend), device="cuda")


def test_stable_coupler_on_the_device():
    check_coupler(StableCoupler(), device="cuda")


@pytest.mark.parametrize("check", ["dopri5", "sinkhorn", "compile", "torchrun", "resume"])
def test_gpu_check_passes(gpu_check, check):
    rows = gpu_check.run_check(check, lambda: gpu_check.FUNCTIONS[check](gpu_check.parse_args([])))
    assert gpu_check.exit_code(rows) == 0, gpu_check.format_table(rows)
