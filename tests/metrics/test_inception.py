"""The FID Inception network: pytorch-fid's state-dict layout, loading weights from a file,
and the features it gives. The real weights are not available here: a randomly initialised
network saved to a file stands in for them."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

import mfm_core.metrics.inception as inception
from mfm_core.errors import ConfigError
from mfm_core.metrics.inception import FIDInceptionV3, InceptionFeatures, tf_avg_pool
from mfm_core.registry import create
from mfm_core.schema import InvalidValue


@pytest.fixture(scope="module")
def network() -> FIDInceptionV3:
    torch.manual_seed(0)
    network = FIDInceptionV3()
    for module in network.modules():  # He initialisation keeps activations at a usable scale
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return network


@pytest.fixture(scope="module")
def weights(network: FIDInceptionV3, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "weights.pth"
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def features(weights: Path) -> InceptionFeatures:
    return InceptionFeatures(weights=str(weights), batch_size=3, device="cpu")


def images(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=gen) * 2 - 1


def test_state_dict_has_pytorch_fids_layout(network: FIDInceptionV3) -> None:
    state = network.state_dict()
    # torchvision's Inception3 has 27,161,264 parameters; the FID variant drops AuxLogits
    # (3,326,696) and has 1008 classes instead of 1000 (+ 8 * 2049).
    assert sum(p.numel() for p in network.parameters()) == 23_850_960
    convs = [key[: -len(".conv.weight")] for key in state if key.endswith(".conv.weight")]
    assert len(convs) == 94
    for conv in convs:
        for buffer in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert f"{conv}.bn.{buffer}" in state
    assert len(state) == 94 * 6 + 2
    assert not any(key.startswith("AuxLogits") for key in state)
    shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7dbl_5.conv.weight": (192, 128, 1, 7),
        "Mixed_6e.branch7x7_3.conv.weight": (192, 192, 7, 1),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch3x3_2a.bn.running_var": (384,),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key


def test_pooling_follows_tensorflow() -> None:
    # The mean leaves the padding out: a constant image stays constant up to the border.
    assert torch.equal(tf_avg_pool(torch.ones(1, 1, 4, 4)), torch.ones(1, 1, 4, 4))
    network = FIDInceptionV3()
    assert network.Mixed_7b.pool == "avg" and network.Mixed_7c.pool == "max"


def test_torchvision_is_not_used() -> None:
    assert "import torchvision" not in inspect.getsource(inception)
    assert "from torchvision" not in inspect.getsource(inception)


def test_features_of_small_images(features: InceptionFeatures) -> None:
    for size in (32, 64):
        out = features(images(2, size))
        assert out.shape == (2, 2048) and out.dtype == torch.float32 and out.device.type == "cpu"
        assert torch.isfinite(out).all() and out.abs().sum() > 0
        assert not torch.allclose(out[0], out[1])
    gray = images(2, 32, channels=1)
    assert torch.allclose(features(gray), features(gray.expand(-1, 3, -1, -1)))
    assert features(images(0, 32)).shape == (0, 2048)


def test_features_are_deterministic_and_independent_of_batching(
    features: InceptionFeatures, weights: Path
) -> None:
    x = images(4, 32, seed=1)
    batched = features(x)  # batches of 3 and 1
    assert torch.equal(batched, features(x))
    whole = InceptionFeatures(weights=str(weights), batch_size=4, device="cpu")(x)
    assert torch.allclose(batched, whole, rtol=1e-4, atol=1e-5 * whole.abs().max().item())


def test_wrong_channel_counts_are_rejected(features: InceptionFeatures) -> None:
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\).*got \(2, 2, 8, 8\)"):
        features(torch.zeros(2, 2, 8, 8))


def test_weights_come_from_the_environment(weights: Path, monkeypatch) -> None:
    monkeypatch.setenv("MFM_INCEPTION_WEIGHTS", str(weights))
    feature_map = create("feature_map", "inception", device="cpu")
    assert feature_map.dim == 2048


def test_missing_weights_say_what_to_get_and_where_to_put_it(monkeypatch) -> None:
    monkeypatch.delenv("MFM_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(InvalidValue) as caught:
        InceptionFeatures()
    assert caught.value.name == "weights"
    for part in ("pt_inception-2015-12-05-6726825d.pth", "MFM_INCEPTION_WEIGHTS", "pytorch-fid"):
        assert part in caught.value.message
    with pytest.raises(ConfigError, match=r"^\$\.feature_map\.weights: /no/such\.pth does not"):
        create("feature_map", "inception", weights="/no/such.pth")


def test_wrong_files_name_the_path_and_the_problem(network: FIDInceptionV3, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(InvalidValue, match=f"{garbage} is not a torch state dict"):
        InceptionFeatures(weights=str(garbage))

    state = network.state_dict()
    partial = tmp_path / "partial.pth"
    # 9 convolutions with 5 tensors each (their num_batches_tracked may be missing)
    torch.save({k: v for k, v in state.items() if not k.startswith("Mixed_7c")}, partial)
    with pytest.raises(InvalidValue, match=rf"{partial} does not match: 45 missing keys"):
        InceptionFeatures(weights=str(partial))

    torchvision_classes = tmp_path / "classes.pth"
    torch.save({**state, "fc.weight": torch.zeros(1000, 2048)}, torchvision_classes)
    with pytest.raises(InvalidValue, match=r"fc\.weight \(1000, 2048\) instead of \(1008, 2048\)"):
        InceptionFeatures(weights=str(torchvision_classes))

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(InvalidValue, match=f"{not_a_dict} holds a list, not a state dict"):
        InceptionFeatures(weights=str(not_a_dict))


def test_files_without_batch_counters_load(network: FIDInceptionV3, tmp_path: Path) -> None:
    old = tmp_path / "old.pth"
    state = network.state_dict()
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, old)
    assert InceptionFeatures(weights=str(old), device="cpu").dim == 2048
