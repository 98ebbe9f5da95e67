"""A multilayer perceptron vector field for low-dimensional data."""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
from torch import nn

from mfm_core.models.inputs import check_shape, class_labels

Activation = Literal["silu", "relu", "gelu", "tanh"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}
# Angular frequencies from 1 to 1000 rad per unit time: on t in [0, 1] the lowest varies
# smoothly while the highest resolves differences of about 1e-3 in t.
_MAX_FREQUENCY = 1000.0


def sinusoidal_embedding(t: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """``[cos(w t), sin(w t)]`` for each frequency ``w``: t (batch,) -> (batch, 2 * len(w))."""
    angles = t[:, None] * frequencies[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class MLP(nn.Module):
    """``v(x, t, cond) = net([flatten(x), e(t) + e_class(cond)])`` reshaped to ``x``'s shape.

    ``x``: (batch, *data_shape); ``t``: (batch,) or a scalar; ``cond``: (batch,) class labels
    in ``[0, num_classes)`` or ``None``. ``e(t)`` is a sinusoidal embedding of width
    ``time_embedding_dim``. With ``num_classes`` set, a learned class embedding is added to it;
    ``cond=None`` (or label -1) then selects an extra "no class" embedding, so the same model
    also serves unconditional sampling. ``net`` is Linear/activation layers of widths ``hidden``.

    Args:
        hidden: the widths of the hidden layers, one number per layer.
        time_embedding_dim: the width of the sinusoidal time embedding.
        activation: the nonlinearity between the layers.
        num_classes: the number of class labels for a class-conditional field; unset, the field is
            unconditional.
    """

    def __init__(
        self,
        *,
        data_shape: tuple[int, ...],
        hidden: tuple[int, ...] = (256, 256, 256),
        time_embedding_dim: int = 64,
        activation: Activation = "silu",
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if not data_shape or any(d < 1 for d in data_shape):
            raise ValueError(f"data_shape must hold positive sizes, got {data_shape!r}")
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden must hold positive layer widths, got {hidden!r}")
        if time_embedding_dim < 2 or time_embedding_dim % 2:
            raise ValueError(
                f"time_embedding_dim must be a positive even integer, got {time_embedding_dim!r}"
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(_ACTIVATIONS)}, got {activation!r}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        half = time_embedding_dim // 2
        self.register_buffer(
            "frequencies",
            torch.logspace(0.0, math.log10(_MAX_FREQUENCY), half),
            persistent=False,
        )
        self.class_embedding = (
            None if num_classes is None else nn.Embedding(num_classes + 1, time_embedding_dim)
        )
        dim = math.prod(self.data_shape)
        widths = [dim + time_embedding_dim, *hidden]
        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), _ACTIVATIONS[activation]()]
        layers.append(nn.Linear(widths[-1], dim))
        self.net = nn.Sequential(*layers)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_shape(x, self.data_shape)
        batch = x.shape[0]
        # Times stay in the buffer's precision: half-precision t would blur the high frequencies.
        embedding = sinusoidal_embedding(
            t.to(self.frequencies.dtype).expand(batch), self.frequencies
        )
        labels = class_labels(cond, self.num_classes, batch, x.device)
        if labels is not None:
            embedding = embedding + self.class_embedding(labels)
        out = self.net(torch.cat([x.flatten(1), embedding.to(x.dtype)], dim=1))
        return out.reshape(x.shape)
