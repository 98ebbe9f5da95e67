"""The FID Inception-v3 network and its pool3 features, in plain torch.

This is the network of TTUR's FID (TensorFlow's 2015-12-05 Inception graph) as ported by
pytorch-fid: torchvision's Inception3 layout with 1008 classes, no auxiliary classifier, and
three differences in the pooling branches (``FIDInceptionA/C/E_1/E_2`` in pytorch-fid):
average pools that leave the zero padding out of the mean, and a max pool in the last block.
Its state-dict keys and shapes are pytorch-fid's, so the released weights file
``pt_inception-2015-12-05-6726825d.pth`` loads as it is. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mfm_core.schema import InvalidValue

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_ENV = "MFM_INCEPTION_WEIGHTS"
MISSING_WEIGHTS = (
    f"the inception feature map needs the FID Inception weights {WEIGHTS_FILE} (the file "
    "pytorch-fid releases; mfm never downloads it): set features.weights = "
    f'"/path/to/{WEIGHTS_FILE}" in the metric\'s table, or the environment variable '
    f"{WEIGHTS_ENV}=/path/to/{WEIGHTS_FILE}"
)


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 0.001), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv: int | tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 average pool, stride 1, padding 1, averaging only over pixels inside the image
    (TensorFlow's 'SAME' pool, which the FID weights were trained with)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches; 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                double,
                self.branch_pool(tf_avg_pool(x)),
            ],
            1,
        )


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17: strided 3x3, strided double 3x3, max pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), double, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 then 7x1); 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        row = {"kernel_size": (1, 7), "padding": (0, 3)}
        column = {"kernel_size": (7, 1), "padding": (3, 0)}
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **column)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **column)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **column)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            double = conv(double)
        return torch.cat(
            [
                self.branch1x1(x),
                single,
                self.branch7x7dbl_5(double),
                self.branch_pool(tf_avg_pool(x)),
            ],
            1,
        )


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8: strided 3x3, factorised 7x7 then strided 3x3, max pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            seven = conv(seven)
        return torch.cat(
            [
                self.branch3x3_2(self.branch3x3_1(x)),
                seven,
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs; 2048 channels. ``pool = "max"`` in the last
    block of the FID network (``Mixed_7c``), where TensorFlow's graph max-pools."""

    def __init__(self, in_channels: int, pool: Literal["avg", "max"]) -> None:
        super().__init__()
        self.pool = pool
        row = {"kernel_size": (1, 3), "padding": (0, 1)}
        column = {"kernel_size": (3, 1), "padding": (1, 0)}
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, **row)
        self.branch3x3_2b = BasicConv2d(384, 384, **column)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, **row)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, **column)
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = tf_avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(single),
                self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            1,
        )


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3: ``forward(x)`` maps (n, 3, 299, 299) inputs in [-1, 1] to the
    (n, 2048) pool3 features (the final average pool). ``fc`` (1008 classes) is kept only so
    that the weights file loads strictly; it is not used."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return x.mean(dim=(2, 3))


def load_weights(network: nn.Module, path: str) -> None:
    """Load a state dict from ``path`` into ``network`` strictly; a file that is not one, or
    whose keys or shapes differ, is an ``InvalidValue`` for ``weights`` naming the path.

    ``num_batches_tracked`` buffers (absent from files saved by torch < 0.4.1, unused in
    evaluation) may be missing.
    """
    expected = f"expected the FID Inception weights {WEIGHTS_FILE}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise InvalidValue(
            "weights", f"{path} is not a torch state dict ({type(exc).__name__}: {exc}); {expected}"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise InvalidValue(
            "weights", f"{path} holds a {type(state).__name__}, not a state dict; {expected}"
        )
    own = network.state_dict()
    state = dict(state)
    for key, value in own.items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, torch.zeros_like(value))
    problems = []
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    wrong = [
        f"{key} {tuple(state[key].shape)} instead of {tuple(own[key].shape)}"
        for key in own
        if key in state and state[key].shape != own[key].shape
    ]
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected)):
        if keys:
            problems.append(f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape (e.g. {wrong[0]})")
    if problems:
        raise InvalidValue("weights", f"{path} does not match: {'; '.join(problems)}; {expected}")
    network.load_state_dict(state, strict=True)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidValue("device", f"{name!r} is not a torch device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidValue("device", f"{name!r} requested but CUDA is not available")
    return device


class InceptionFeatures:
    """The FID feature map: pool3 features, ``(n, C, H, W) -> (n, 2048)`` float32 on the CPU.

    Images are in [-1, 1]; values outside are clamped (as saving them as image files would),
    greyscale (C = 1) is repeated to three channels, and every image is resized to 299x299
    bilinearly (``align_corners=False``), as pytorch-fid does. pytorch-fid resizes images in
    [0, 1] and then maps them to [-1, 1]; bilinear resizing commutes with that affine map, so
    resizing our [-1, 1] images directly gives the same input.

    ``weights``: the path of ``pt_inception-2015-12-05-6726825d.pth``; unset, the environment
    variable ``MFM_INCEPTION_WEIGHTS``. ``batch_size``: images per forward pass. ``device``:
    ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:1"``, ...

    Args:
        weights: the path of the pytorch-fid Inception weights file; unset, the
            MFM_INCEPTION_WEIGHTS environment variable.
        batch_size: how many images go through the network per forward pass.
        device: where the network runs: "auto" (CUDA when available), "cpu", "cuda:1", ...
    """

    dim = 2048

    def __init__(
        self, *, weights: str | None = None, batch_size: int = 100, device: str = "auto"
    ) -> None:
        if batch_size < 1:
            raise InvalidValue("batch_size", f"must be a positive integer, got {batch_size!r}")
        path = weights or os.environ.get(WEIGHTS_ENV)
        if not path:
            raise InvalidValue("weights", MISSING_WEIGHTS)
        if not Path(path).is_file():
            raise InvalidValue("weights", f"{path} does not exist; {MISSING_WEIGHTS}")
        self.device = _device(device)
        self.batch_size = batch_size
        self.network = FIDInceptionV3()
        load_weights(self.network, path)
        self.network.eval().requires_grad_(False).to(self.device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                "the inception feature map takes images of shape (n, 3, H, W) or (n, 1, H, W), "
                f"got {tuple(x.shape)}"
            )
        features = []
        for start in range(0, len(x), self.batch_size):
            batch = x[start : start + self.batch_size].to(self.device, torch.float32)
            batch = batch.clamp(-1, 1).expand(-1, 3, -1, -1)
            batch = F.interpolate(batch, size=(299, 299), mode="bilinear", align_corners=False)
            features.append(self.network(batch).cpu())
        if not features:
            return torch.zeros(0, self.dim)
        return torch.cat(features)
