"""The train state of one process in a checkpoint: its random streams and its pair feed; and
which checkpoint a resume continues from, mapped by every process itself."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from mfm_core.errors import CheckpointError
from mfm_core.runner.rundir.checkpoint import load_checkpoint, newest_loadable
from mfm_core.runner.training.distributed import Distributed
from mfm_core.runner.training.feed import PairFeed

logger = logging.getLogger(__name__)


def rank_state(feed: PairFeed, step_generator: torch.Generator, device: torch.device) -> dict:
    """This process's feed (generator, stream, pairs in hand and ahead), the generator of its
    steps' times, and torch's global CPU (and CUDA) random state, which dropout draws from."""
    state = {
        **feed.state_dict(),
        "step_generator": step_generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_rank_state(
    mine: dict[str, Any], feed: PairFeed, step_generator: torch.Generator, device: torch.device
) -> None:
    """Put back what :func:`rank_state` saved."""
    feed.load_state_dict(mine)
    if "step_generator" in mine:
        step_generator.set_state(mine["step_generator"])
    else:
        logger.warning(
            "warning: the checkpoint was written by an earlier mfm that drew the times of "
            "its steps from the coupling's generator; the resumed run draws them from a "
            "generator of their own, so it is not the run an uninterrupted one would be"
        )
    torch.set_rng_state(mine["torch_rng"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda_rng"], device)


def map_newest(directory: Path, dist: Distributed) -> tuple[dict[str, Any], str]:
    """The newest checkpoint in ``directory`` that loads, and its path. The main process picks
    it (skipping broken newer ones with a warning) and tells the others its path; every
    process then maps that file itself from the shared file system, so no state crosses
    between processes (an ImageNet-64 U-Net with its Adam state is about 3.6 GB)."""
    picked: tuple[str, str] = ("", "")
    if dist.is_main:
        try:
            path, problems = newest_loadable(directory)
            for problem in problems:
                logger.warning(f"warning: skipped {problem}")
            picked = ("", str(path))
        except CheckpointError as exc:
            picked = (str(exc), "")
    error, path = dist.broadcast(picked)
    if error:
        raise CheckpointError(error)
    try:
        return load_checkpoint(Path(path), mmap=True), path
    except CheckpointError as exc:
        raise CheckpointError(
            f"{exc}; on several nodes the run directory must be on a file system every node reads"
        ) from None
