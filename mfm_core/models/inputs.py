"""Input handling every vector-field network shares: the sample shape and class labels."""

from __future__ import annotations

import torch


def check_shape(x: torch.Tensor, data_shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``x`` is a batch of samples of shape ``data_shape``."""
    if tuple(x.shape[1:]) != data_shape:
        raise ValueError(
            f"expected x of shape (batch, {', '.join(map(str, data_shape))}), got {tuple(x.shape)}"
        )


def class_labels(
    cond: torch.Tensor | None, num_classes: int | None, batch: int, device: torch.device
) -> torch.Tensor | None:
    """Indices into a label embedding of ``num_classes + 1`` rows, the last being "no label".

    ``cond=None`` and label -1 select the null row (unconditional, and classifier-free
    guidance). For a model without classes (``num_classes is None``) this is ``None``, and
    ``cond`` may only hold -1.
    """
    if num_classes is None:
        if cond is not None and bool((cond >= 0).any()):
            raise ValueError(
                "cond holds class labels, but the model was built without num_classes "
                "(only -1, no label, is allowed)"
            )
        return None
    null = torch.full((batch,), num_classes, dtype=torch.long, device=device)
    return null if cond is None else torch.where(cond < 0, null, cond.long())
