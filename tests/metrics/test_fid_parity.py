"""mfm's FID Inception and Frechet distance against pytorch-fid's, on seeded random weights.

The reference outputs in data/fid_parity.npz were computed by pytorch-fid itself (in a venv
of its own, by benchmarks/fid_parity.py --write); this test needs neither pytorch-fid nor
the weights file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from mfm_core.metrics.fid import frechet_distance

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "metrics" / "data" / "fid_parity.npz"


def _parity_module():
    spec = importlib.util.spec_from_file_location(
        "fid_parity", ROOT / "benchmarks" / "fid_parity.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as saved:
        return {key: saved[key] for key in saved.files}


@pytest.fixture(scope="module")
def parity():
    return _parity_module()


def test_the_seeded_weights_and_inputs_are_the_ones_pytorch_fid_saw(parity, reference):
    assert parity.state_hash(parity.seeded_state()) == str(reference["state_sha256"])
    assert np.array_equal(parity.seeded_images(), reference["images"])
    for key, value in parity.seeded_statistics().items():
        assert np.array_equal(value, reference[key]), key


def test_inception_features_match_pytorch_fid(parity, reference):
    theirs = reference["features"].astype(np.float64)
    # the seeded network gives distinct, order-one features: a real comparison
    assert theirs.shape == (parity.IMAGES, 2048)
    assert np.abs(theirs).max() > 1 and np.abs(theirs[0] - theirs[1]).max() > 0.1
    with torch.random.fork_rng(devices=[]):
        ours = parity.mfm_features(parity.seeded_state(), reference["images"])
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()


def test_frechet_distance_matches_pytorch_fid(reference):
    for index, theirs in enumerate(reference["frechet"]):
        pick = [reference[f"{k}_{index}"] for k in ("mu1", "sigma1", "mu2", "sigma2")]
        ours = frechet_distance(*pick)
        assert ours == pytest.approx(theirs, rel=1e-7, abs=1e-8), index
    assert reference["frechet"][0] > 100 and reference["frechet"][2] > 100
    assert abs(reference["frechet"][1]) < 1e-8  # a pair with itself
