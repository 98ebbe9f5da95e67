"""Training on several processes launched by ``torchrun``: one process per GPU (or CPU slot).

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous address) in each
process's environment; without them the run is a single process and every collective here is
a no-op, so the same code serves both.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np
import torch
import torch.distributed as dist

from mfm_core.errors import ConfigError


@attrs.frozen(kw_only=True)
class Distributed:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None
    """``None`` when not launched by torchrun."""

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes the run directory."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def mean_and_any(self, value: torch.Tensor, flag: bool) -> tuple[torch.Tensor, bool]:
        """The mean of ``value`` over processes, and whether any process raised ``flag``
        (one all-reduce; every process must call it at the same step)."""
        if not self.active:
            return value, flag
        flag_value = torch.tensor(float(flag), device=value.device)
        packed = torch.stack([value.detach().float(), flag_value])
        dist.all_reduce(packed)
        return packed[0] / self.world_size, bool(packed[1] > 0)

    def gather(self, obj: Any) -> list[Any] | None:
        """Every process's ``obj`` on the main process (``None`` elsewhere)."""
        if not self.active:
            return [obj]
        received = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, received, dst=0)
        return received

    def broadcast(self, obj: Any) -> Any:
        """The main process's ``obj`` on every process."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def from_environment() -> Distributed:
    """This process's rank from torchrun's environment variables (a single process without)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Distributed()
    try:
        return Distributed(
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError:
        raise ConfigError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)"
        ) from None


@contextlib.contextmanager
def process_group(env: Distributed, device: torch.device) -> Iterator[None]:
    """Join the other processes (NCCL on CUDA, gloo on the CPU) for the ``with`` block.

    The group is destroyed when the block ends normally. After an error the process just
    exits: torchrun then stops the other processes, which would otherwise wait for this one.
    """
    if not env.active:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    yield
    dist.destroy_process_group()


TRAIN_STREAM = 0  # each process's generator of noise, times, label drops (and toy data)
EPOCH_STREAM = 1  # the permutation of each epoch of an indexed data set, shared by all
FLIP_STREAM = 2  # each process's horizontal flips
TORCH_STREAM = 3  # the global torch RNG (dropout) of each process but the first


def derived_seed(seed: int, stream: int, index: int) -> int:
    """The seed of random ``stream`` number ``index`` (a rank, an epoch). Stream 0, index 0
    (rank 0's generator) is ``seed`` itself, so a one-process run draws from ``train.seed``
    directly; the others are hashed from ``(seed, stream, index)``, so no two share numbers."""
    if stream == 0 and index == 0:
        return seed
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1, np.uint64)[0] >> 1)
