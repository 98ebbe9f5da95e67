"""Weights to share: one safetensors file with a run's weights (the EMA ones by default) and,
in its metadata, the run's resolved config, which weights they are and the run's provenance.

safetensors is the format made for sharing weights: reading one runs no code, unlike a
pickled checkpoint, and the metadata is enough to build the model again (``load_run``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import tomli_w
import torch

from mfm_core.config import parse_toml
from mfm_core.errors import CheckpointError
from mfm_core.runner.rundir.checkpoint import atomic_write

SUFFIX = ".safetensors"
CONFIG_KEY = "mfm.config"
WEIGHTS_KEY = "mfm.weights"
PROVENANCE_KEY = "mfm.provenance"


@attrs.frozen(kw_only=True)
class SharedWeights:
    """What a weights file holds: the model's ``weights``, the run's ``config`` (TOML data),
    which weights they are (``record``: ``kind`` ``ema`` or ``raw``, ``step``, ...), and the
    run's ``provenance`` (its sessions)."""

    weights: dict[str, torch.Tensor]
    config: dict[str, Any]
    record: dict[str, Any]
    provenance: list[dict[str, Any]]


def is_weights_file(path: Path) -> bool:
    """A path naming a shared weights file rather than a run directory."""
    return Path(path).suffix == SUFFIX


def write_weights_file(path: Path, shared: SharedWeights) -> None:
    """Write ``shared`` to ``path`` (a ``.safetensors`` file); a reader never sees half of it."""
    from safetensors.torch import save

    metadata = {
        CONFIG_KEY: tomli_w.dumps(shared.config),
        WEIGHTS_KEY: json.dumps(shared.record),
        PROVENANCE_KEY: json.dumps(shared.provenance),
    }
    # safetensors stores each tensor once: copies, contiguous, on the CPU
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in shared.weights.items()}
    data = save(tensors, metadata=metadata)
    atomic_write(Path(path), lambda handle: handle.write(data))


def read_weights_file(path: Path) -> SharedWeights:
    """Read a file written by :func:`write_weights_file`; a file that is not one is an error
    saying what it lacks."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            weights = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"weights file {str(path)!r} is unreadable: {exc}") from None
    if CONFIG_KEY not in metadata:
        raise CheckpointError(
            f"weights file {str(path)!r} has no mfm config in its metadata; it was not written "
            "by `mfm export`"
        )
    try:
        record = json.loads(metadata.get(WEIGHTS_KEY, "{}"))
        provenance = json.loads(metadata.get(PROVENANCE_KEY, "[]"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"weights file {str(path)!r} has unreadable metadata: {exc}"
        ) from None
    return SharedWeights(
        weights=weights,
        config=parse_toml(metadata[CONFIG_KEY], f"the config in weights file {str(path)!r}"),
        record=record,
        provenance=provenance,
    )
