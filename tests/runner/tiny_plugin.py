"""A plugin for the runner's tests: tiny labelled images and a tiny conditional conv field.

Loaded in-process by ``conftest.py`` and, for subprocesses (torchrun, SIGKILL), put on their
PYTHONPATH with the metadata of an installed distribution.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from mfm_core import hookimpl


class TinyImages:
    """``size`` images of shape (3, 8, 8) in [-1, 1]; item ``i`` is a fixed function of ``i``,
    its label ``i % num_classes`` (no labels with ``num_classes = 0``). With ``TINY_READ_LOG``
    set, each process appends the indices it reads to ``$TINY_READ_LOG.<RANK>``."""

    def __init__(self, *, root: str, size: int = 64, num_classes: int = 4, hflip: bool = True):
        self.root = root
        self.shape = (3, 8, 8)
        self.size = size
        self.num_classes = num_classes or None
        self.hflip = hflip

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        if "TINY_READ_LOG" in os.environ:
            with open(f"{os.environ['TINY_READ_LOG']}.{os.environ.get('RANK', 0)}", "a") as log:
                log.write(f"{index}\n")
        generator = torch.Generator().manual_seed(index)
        image = torch.rand(self.shape, generator=generator) * 2 - 1
        return image, -1 if self.num_classes is None else index % self.num_classes

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(self.size, (n,), generator=generator)
        return torch.stack([self[i][0] for i in index.tolist()])


class TinyField(nn.Module):
    """``v(x, t, cond)``: two 3x3 convolutions, with a label embedding (-1: no label)."""

    def __init__(
        self,
        *,
        data_shape: tuple[int, ...],
        num_classes: int | None = None,
        width: int = 8,
        dropout: float = 0.0,
    ):
        super().__init__()
        channels = data_shape[0]
        self.num_classes = num_classes
        self.inp = nn.Conv2d(channels + 1, width, 3, padding=1)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.embedding = None if num_classes is None else nn.Embedding(num_classes + 1, width)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        time = t.to(x.dtype).expand(len(x))[:, None, None, None].expand(-1, 1, *x.shape[2:])
        h = torch.nn.functional.silu(self.inp(torch.cat([x, time], 1)))
        if self.embedding is not None:
            null = torch.full((len(x),), self.num_classes, device=x.device)
            labels = null if cond is None else torch.where(cond < 0, null, cond)
            h = h + self.embedding(labels)[:, :, None, None]
        return self.out(self.dropout(h))


@hookimpl
def register_datasets(register) -> None:
    register("tiny-images", TinyImages)


@hookimpl
def register_vector_fields(register) -> None:
    register("tiny-field", TinyField)
