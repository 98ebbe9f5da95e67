"""Random draws from any data set, with labels when it has them."""

from __future__ import annotations

import torch

from mfm_core.protocols import Dataset, IndexedDataset


def draw_labelled(
    dataset: Dataset, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` random samples with their labels (``None`` for a data set without labels)."""
    if not isinstance(dataset, IndexedDataset):
        return dataset.sample(n, generator), None
    index = torch.randint(len(dataset), (n,), generator=generator)
    items = [dataset[i] for i in index.tolist()]
    samples = torch.stack([sample for sample, _ in items])
    if dataset.num_classes is None:
        return samples, None
    return samples, torch.tensor([label for _, label in items], dtype=torch.long)
