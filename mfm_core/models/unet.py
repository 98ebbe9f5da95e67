"""The ADM U-Net (Dhariwal & Nichol 2021, "guided-diffusion") as a flow-matching vector field.

Recommended settings (``[model]`` tables of the shipped image configs):

| data | channels | channel_mult | num_res_blocks | attention_resolutions | heads | dropout |
|---|---|---|---|---|---|---|
| ImageNet 64x64 | 192 | [1, 2, 3, 4] | 3 | [32, 16, 8] | head_channels 64 | 0.1 |
| ImageNet 32x32 | 256 | [1, 2, 2, 2] | 3 | [16, 8] | head_channels 64 | 0.0 |
| CIFAR-10 | 128 | [1, 2, 2, 2] | 2 | [16] | num_heads 4 | 0.1 |

ImageNet 64 is guided-diffusion's released 64x64 model (296 M parameters class-conditional);
ImageNet 32 is, as we read it, the U-Net of the Flow Matching paper (Lipman et al. 2023), on
which Multisample Flow Matching built (dropout 0.1 at 64x64 is ADM's; we recall 0 in the Flow
Matching paper). CIFAR-10 is the DDPM / TorchCFM size. All use ``resblock_updown = true`` and
``use_scale_shift_norm = true`` (ADM's choices). docs/components.md has the parameter counts.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from mfm_core.models.inputs import check_shape, class_labels

NORM_GROUPS = 32
# Flow-matching time t in [0, 1] is scaled to ADM's diffusion step range [0, 1000], so the
# sinusoidal frequencies (periods 2 pi to 2 pi 10^4 steps) cover the same ground as in ADM.
TIME_SCALE = 1000.0
MAX_PERIOD = 10_000.0


def _default_channel_mult(resolution: int) -> tuple[int, ...]:
    """guided-diffusion's choice per image size (``script_util.create_model``)."""
    if resolution >= 256:
        return (1, 1, 2, 2, 4, 4)
    if resolution >= 128:
        return (1, 1, 2, 3, 4)
    if resolution >= 64:
        return (1, 2, 3, 4)
    return (1, 2, 2, 2)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``[cos(w_k s), sin(w_k s)]`` with ``s = 1000 t`` and ``w_k = 10000^(-k / (dim / 2))``.

    ``t``: (batch,) -> (batch, dim), float32 whatever the autocast dtype.
    """
    half = dim // 2
    k = torch.arange(half, device=t.device, dtype=torch.float32)
    frequencies = torch.exp(-math.log(MAX_PERIOD) * k / half)
    angles = TIME_SCALE * t.float()[:, None] * frequencies[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def _zero(module: nn.Module) -> nn.Module:
    """ADM zero-initialises the last layer of every residual branch and of the network, so
    each block starts as the identity and the untrained field is zero."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(NORM_GROUPS, channels)


class ResBlock(nn.Module):
    """``skip(x) + conv(dropout(silu(norm(h) * (1 + scale) + shift)))`` where
    ``h = conv(silu(norm(x)))`` and ``(scale, shift)`` come from the embedding (FiLM).

    ``resample`` = "down" / "up" halves / doubles the resolution inside the block (ADM's
    ``resblock_updown``). Without ``scale_shift``, the embedding is added to ``h`` instead.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        emb_channels: int,
        dropout: float,
        scale_shift: bool,
        resample: str | None = None,
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.in_norm = _norm(channels)
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.resample = {
            None: nn.Identity(),
            "down": nn.AvgPool2d(2),
            "up": nn.Upsample(scale_factor=2.0, mode="nearest"),
        }[resample]
        self.emb = nn.Linear(emb_channels, 2 * out_channels if scale_shift else out_channels)
        self.out_norm = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = (
            nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_conv(self.resample(F.silu(self.in_norm(x))))
        x = self.resample(x)
        e = self.emb(F.silu(emb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + e)
        return self.skip(x) + self.out_conv(self.dropout(F.silu(h)))


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, residual: ``x + proj(attn(norm(x)))``."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, height * width))
        # (b, 3 * c, L) -> three (b, heads, L, head_dim)
        qkv = qkv.reshape(b, 3, self.num_heads, c // self.num_heads, height * width)
        q, k, v = qkv.transpose(3, 4).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(2, 3).reshape(b, c, height * width)
        return x + self.proj(h).reshape(b, c, height, width)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Sequential):
    """Blocks applied in order, each given the embedding (ADM's ``TimestepEmbedSequential``)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, emb)
        return x


class UNet(nn.Module):
    """The ADM U-Net: ``v(x, t, cond)`` for images ``x`` of shape (batch, C, H, W).

    Levels ``i = 0 .. len(channel_mult) - 1`` run at resolution ``H / 2^i`` with width
    ``channels * channel_mult[i]``. Each level of the encoder has ``num_res_blocks`` residual
    blocks, the decoder ``num_res_blocks + 1`` (each taking one skip connection), and a
    self-attention block follows every residual block at a resolution listed in
    ``attention_resolutions`` (the feature map's height, e.g. 16 for 16x16). The middle is
    ResBlock, attention, ResBlock at the lowest resolution.

    Time ``t`` in [0, 1], shape (batch,) or a scalar, is embedded sinusoidally (after scaling
    by 1000, ADM's step range) and mapped by a 2-layer MLP to ``4 * channels``. With
    ``num_classes`` set, a label embedding is added: ``cond`` is a LongTensor (batch,) of
    labels in ``[0, num_classes)``, and -1 (or ``cond=None``) selects an extra learned "no
    label" embedding, which classifier-free guidance uses as the unconditional field.

    Attention uses ``num_heads`` heads, or ``width // head_channels`` heads when
    ``head_channels`` is set (ADM's ``num_head_channels``). ``resblock_updown`` resamples
    inside residual blocks instead of with strided / nearest-neighbour convolutions;
    ``use_scale_shift_norm`` injects the embedding as ``norm(h) * (1 + scale) + shift``.
    The last convolution of every residual branch and of the network starts at zero, so the
    untrained field is exactly zero. ``channel_mult = None`` takes guided-diffusion's choice
    for the image size: (1, 2, 2, 2) up to 32, (1, 2, 3, 4) at 64, (1, 1, 2, 3, 4) at 128.

    Args:
        channels: the base width (channels) of the first level; every level's width is a multiple of
            it.
        channel_mult: the width multiplier of each resolution level; unset, guided-diffusion's
            choice for the image size.
        num_res_blocks: the residual blocks per encoder level (the decoder has one more).
        attention_resolutions: the feature-map heights (e.g. 16 for 16x16) at which self-attention
            follows each residual block.
        num_heads: the number of attention heads, used when head_channels is unset.
        head_channels: the channels per attention head, which sets the number of heads from each
            level's width instead of num_heads.
        dropout: the dropout probability inside the residual blocks, from 0 to 1.
        num_classes: the number of class labels for a class-conditional field; unset, the field is
            unconditional.
        resblock_updown: whether residual blocks do the up- and downsampling, rather than plain
            convolutions.
        use_scale_shift_norm: whether the time and class embedding scales and shifts the normalised
            features, rather than being added to them.
    """

    def __init__(
        self,
        *,
        data_shape: tuple[int, ...],
        channels: int = 128,
        channel_mult: tuple[int, ...] | None = None,
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (16, 8),
        num_heads: int = 4,
        head_channels: int | None = None,
        dropout: float = 0.0,
        num_classes: int | None = None,
        resblock_updown: bool = True,
        use_scale_shift_norm: bool = True,
    ) -> None:
        super().__init__()
        if len(data_shape) != 3 or any(d < 1 for d in data_shape):
            raise ValueError(f"data_shape must be (channels, height, width), got {data_shape!r}")
        in_channels, height, width = data_shape
        if channel_mult is None:
            channel_mult = _default_channel_mult(min(height, width))
        _check_numbers(channels, channel_mult, num_res_blocks, dropout, num_classes)
        levels = len(channel_mult)
        resolutions = _resolutions(height, width, levels, attention_resolutions)
        widths = [channels * m for m in channel_mult]
        heads = {w: _heads(w, num_heads, head_channels) for w in widths}

        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.channels = channels
        emb_channels = 4 * channels
        self.time_embed = nn.Sequential(
            nn.Linear(channels, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels)
        )
        self.label_embed = (
            None if num_classes is None else nn.Embedding(num_classes + 1, emb_channels)
        )

        def res(c_in: int, c_out: int, resample: str | None = None) -> ResBlock:
            return ResBlock(c_in, c_out, emb_channels, dropout, use_scale_shift_norm, resample)

        self.input_conv = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips = [widths[0]]
        current = widths[0]
        for level, (resolution, out) in enumerate(zip(resolutions, widths, strict=True)):
            for _ in range(num_res_blocks):
                blocks: list[nn.Module] = [res(current, out)]
                current = out
                if resolution in attention_resolutions:
                    blocks.append(AttentionBlock(current, heads[current]))
                self.down.append(Stage(*blocks))
                skips.append(current)
            if level < levels - 1:
                sampler = res(current, current, "down") if resblock_updown else Downsample(current)
                self.down.append(Stage(sampler))
                skips.append(current)
        self.middle = Stage(
            res(current, current), AttentionBlock(current, heads[current]), res(current, current)
        )
        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            resolution, out = resolutions[level], widths[level]
            for block in range(num_res_blocks + 1):
                blocks = [res(current + skips.pop(), out)]
                current = out
                if resolution in attention_resolutions:
                    blocks.append(AttentionBlock(current, heads[current]))
                if level > 0 and block == num_res_blocks:
                    blocks.append(
                        res(current, current, "up") if resblock_updown else Upsample(current)
                    )
                self.up.append(Stage(*blocks))
        self.out = nn.Sequential(
            _norm(current), nn.SiLU(), _zero(nn.Conv2d(current, in_channels, 3, padding=1))
        )

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_shape(x, self.data_shape)
        batch = x.shape[0]
        dtype = self.input_conv.weight.dtype  # float32 under autocast, else the model's dtype
        emb = self.time_embed(timestep_embedding(t.expand(batch), self.channels).to(dtype))
        labels = class_labels(cond, self.num_classes, batch, x.device)
        if labels is not None:
            emb = emb + self.label_embed(labels)
        h = self.input_conv(x)
        hs = [h]
        for stage in self.down:
            h = stage(h, emb)
            hs.append(h)
        h = self.middle(h, emb)
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def _check_numbers(
    channels: int,
    channel_mult: tuple[int, ...],
    num_res_blocks: int,
    dropout: float,
    num_classes: int | None,
) -> None:
    if channels < 1 or channels % NORM_GROUPS:
        raise ValueError(
            f"channels must be a positive multiple of {NORM_GROUPS} (the GroupNorm groups), "
            f"got {channels}"
        )
    if not channel_mult or any(m < 1 for m in channel_mult):
        raise ValueError(f"channel_mult must hold positive integers, got {list(channel_mult)}")
    if num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be positive, got {num_res_blocks}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer or unset, got {num_classes}")


def _resolutions(
    height: int, width: int, levels: int, attention_resolutions: tuple[int, ...]
) -> list[int]:
    """The feature-map height of each level; every attention resolution must be one of them."""
    factor = 2 ** (levels - 1)
    if height % factor or width % factor:
        raise ValueError(
            f"images of {height}x{width} cannot be halved {levels - 1} times: channel_mult has "
            f"{levels} levels, so height and width must be divisible by {factor}"
        )
    resolutions = [height // 2**i for i in range(levels)]
    missing = sorted(set(attention_resolutions) - set(resolutions), reverse=True)
    if missing:
        # As in ADM, a resolution the U-Net does not reach has no attention block; say so, as
        # it may be a typo, but let a shallow (e.g. smoke-test) U-Net share the config.
        warnings.warn(
            f"unet: attention_resolutions {missing} are not among the U-Net's resolutions "
            f"{resolutions} (the image height halved at each level of channel_mult); "
            "no attention there",
            stacklevel=3,
        )
    return resolutions


def _heads(width: int, num_heads: int, head_channels: int | None) -> int:
    """Attention heads at a level of ``width`` channels."""
    if head_channels is None:
        if num_heads < 1 or width % num_heads:
            raise ValueError(
                f"num_heads must be positive and divide every level's width "
                f"(channels * channel_mult), got {num_heads} for width {width}"
            )
        return num_heads
    if head_channels >= 1 and width < head_channels:
        return 1  # a level narrower than one head gets one head of its full width
    if head_channels < 1 or width % head_channels:
        raise ValueError(
            f"head_channels must be positive and divide every level's width "
            f"(channels * channel_mult) that is wider than one head, got {head_channels} "
            f"for width {width}"
        )
    return width // head_channels
