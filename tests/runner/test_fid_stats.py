"""`mfm fid-stats`: streamed reference statistics equal those of the whole set at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mfm_core.cli import main
from mfm_core.datasets import Checkerboard
from mfm_core.metrics import feature_statistics, load_statistics
from tests.datasets.formats import write_cifar10

CIFAR = """
[data]
source = { name = "gaussian", shape = [3, 32, 32] }
target = { name = "cifar10", hflip = false }

[model]
name = "mlp"
"""


@pytest.fixture
def cifar(tmp_path: Path) -> tuple[Path, np.ndarray]:
    written = write_cifar10(tmp_path / "cifar", 6)
    config = tmp_path / "cifar.toml"
    config.write_text(CIFAR)
    pixels = written["train"][0].astype(np.float64) / 127.5 - 1  # (30, 3072), CHW order
    return config, pixels


def test_streamed_statistics_equal_those_of_the_whole_set(capsys, cifar, tmp_path) -> None:
    config, pixels = cifar
    out = tmp_path / "stats.npz"
    args = ["fid-stats", str(config), f"data.root={tmp_path / 'cifar'}", "--out", str(out)]
    assert main([*args, "--features", "pixels", "--batch", "4"]) == 0
    assert "of 30 samples" in capsys.readouterr().out
    mu, sigma = load_statistics(out)
    expected_mu, expected_sigma = feature_statistics(torch.from_numpy(pixels))
    np.testing.assert_allclose(mu, expected_mu, atol=1e-6)
    np.testing.assert_allclose(sigma, expected_sigma, atol=1e-6)


def test_the_first_num_items_and_a_feature_table(cifar, tmp_path) -> None:
    config, pixels = cifar
    out = tmp_path / "stats.npz"
    args = ["fid-stats", str(config), f"data.root={tmp_path / 'cifar'}", "--out", str(out)]
    assert main([*args, "--features", '{name="pixels"}', "--num", "7", "--batch", "3"]) == 0
    mu, sigma = load_statistics(out)
    expected_mu, expected_sigma = feature_statistics(torch.from_numpy(pixels[:7]))
    np.testing.assert_allclose(mu, expected_mu, atol=1e-6)
    np.testing.assert_allclose(sigma, expected_sigma, atol=1e-6)


def test_generated_data_needs_num(capsys, tiny_config, tmp_path) -> None:
    out = tmp_path / "stats.npz"
    args = ["fid-stats", str(tiny_config), "--out", str(out), "--features", "pixels"]
    assert main(args) == 2
    assert "--num" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--num", "300", "--batch", "1000", "--seed", "4"]) == 0
    expected = Checkerboard().sample(300, torch.Generator().manual_seed(4))
    np.testing.assert_allclose(load_statistics(out)[0], feature_statistics(expected)[0], atol=1e-9)


def test_inception_without_weights_is_a_clear_error(capsys, cifar, tmp_path, monkeypatch):
    monkeypatch.delenv("MFM_INCEPTION_WEIGHTS", raising=False)
    config, _ = cifar
    out = tmp_path / "stats.npz"
    args = ["fid-stats", str(config), f"data.root={tmp_path / 'cifar'}", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pt_inception-2015-12-05-6726825d.pth" in err and "MFM_INCEPTION_WEIGHTS" in err
    assert not out.exists()
