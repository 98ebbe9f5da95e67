"""Helpers shared by the coupler tests."""

from __future__ import annotations

import torch


class LabelledPoints:
    """A finite labelled data set (``IndexedDataset``)."""

    hflip = False

    def __init__(self, points: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        self.points, self.labels, self.num_classes = points, labels, num_classes
        self.shape = tuple(points.shape[1:])

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.points[index], int(self.labels[index])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.points[torch.randint(len(self.points), (n,), generator=generator)]
