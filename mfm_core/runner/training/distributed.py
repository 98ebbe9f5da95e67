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
from torch.nn.parallel import DistributedDataParallel

from mfm_core.errors import ConfigError, MfmError


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

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over processes (one all-reduce, no host synchronisation;
        every process must call it at the same point)."""
        if not self.active:
            return value
        total = value.detach().float().clone()
        dist.all_reduce(total)
        return total / self.world_size

    def any(self, flag: bool) -> bool:
        """Whether any process raised ``flag`` (every process must call it at the same
        point). The flag travels over a CPU (gloo) group, so agreeing on it never waits for
        the GPU's queued work."""
        if not self.active:
            return flag
        value = torch.tensor([int(flag)], dtype=torch.int32)
        dist.all_reduce(value, group=_HOST_GROUP)
        return bool(value.item())

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


def gradient_sync(ddp: DistributedDataParallel | None, sync: bool) -> Any:
    """A context in which DDP all-reduces the gradients of a backward pass only if ``sync``
    (the last micro-batch of an accumulated step); without DDP, nothing."""
    if ddp is None or sync:
        return contextlib.nullcontext()
    return ddp.no_sync()


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


_HOST_GROUP: Any = None
"""The gloo group of host-side collectives when the default group is NCCL (else None: the
default group, which is gloo already)."""


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
    global _HOST_GROUP
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    # Host-side flags (a stop request) go over gloo; on gloo that is the default group.
    _HOST_GROUP = dist.new_group(backend="gloo") if backend != "gloo" else None
    try:
        yield
    except RuntimeError as exc:
        if not peer_lost(exc):
            raise
        raise MfmError(
            f"another process of this run stopped, so this one cannot go on ({_first_line(exc)}); "
            "its own error is reported above or by torchrun. Resume the run once it is fixed"
        ) from None
    # Every process reaches the end before any tears its connections down: a peer still
    # inside a collective when this one destroys the group can abort in gloo's threads.
    dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)
    _HOST_GROUP = None
    dist.destroy_process_group()


def peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process went away (it died,
    or stopped on an error of its own): not a bug of this process."""
    text = str(exc).lower()
    signs = ("connection closed by peer", "connection reset by peer", "broken pipe", "timed out")
    return isinstance(exc, dist.DistError) or any(sign in text for sign in signs)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


TRAIN_STREAM = 0  # each process's generator of noise, coupling shuffles (and toy data)
EPOCH_STREAM = 1  # the permutation of each epoch of an indexed data set, shared by all
FLIP_STREAM = 2  # each process's horizontal flips
TORCH_STREAM = 3  # the global torch RNG (dropout) of each process but the first
STEP_STREAM = 4  # each process's generator of the times and label drops of its steps
COUPLER_STREAM = 5  # a stateful coupler's preparation, shared by all (the same state everywhere)
LOADER_STREAM = 6  # each process's data loader (the base seed of its worker processes)


def derived_seed(seed: int, stream: int, index: int) -> int:
    """The seed of random ``stream`` number ``index`` (a rank, an epoch). Stream 0, index 0
    (rank 0's generator) is ``seed`` itself, so a one-process run draws from ``train.seed``
    directly; the others are hashed from ``(seed, stream, index)``, so no two share numbers."""
    if stream == 0 and index == 0:
        return seed
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1, np.uint64)[0] >> 1)
