"""CUDA paths, run with `pytest -m gpu` on a machine with a CUDA device (skipped without)."""

from __future__ import annotations

import pytest
import torch

from mfm_core.couplers import ExactCoupler, StableCoupler
from mfm_core.testing import check_coupler

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("backend", ["scipy", "emd"])
def test_exact_coupler_on_the_device(backend):
    check_coupler(ExactCoupler(backend=backend), device="cuda")


def test_stable_coupler_on_the_device():
    check_coupler(StableCoupler(), device="cuda")


@pytest.mark.parametrize("check", ["compile", "bf16", "resume", "global", "dopri5"])
def test_gpu_check_passes(gpu_check, check):
    args = gpu_check.parse_args(["--device", "cuda"])
    rows = gpu_check.run_check(check, lambda: gpu_check.FUNCTIONS[check](args))
    assert gpu_check.exit_code(rows) == 0, gpu_check.format_table(rows)
