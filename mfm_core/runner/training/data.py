"""Training data for one process: batches of target samples (with labels when there are any).

A finite, indexed data set (images) is read by a ``DataLoader`` in epochs: each epoch is a
permutation drawn from ``(seed, epoch)``, the same on every process, split into disjoint
shards by rank. The stream's position (epoch, batch) is part of the checkpoint, and a resumed
stream starts its sampler there, so no skipped sample is read again. A generator-style data
set (``Dataset.sample``) is drawn from the trainer's generator.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch

from mfm_core.errors import ConfigError
from mfm_core.protocols import Dataset, IndexedDataset
from mfm_core.runner.training.distributed import (
    EPOCH_STREAM,
    FLIP_STREAM,
    LOADER_STREAM,
    derived_seed,
)


def is_indexed(dataset: Dataset) -> bool:
    return isinstance(dataset, IndexedDataset)


class SampledStream:
    """A generator-style data set: ``dataset.sample(n, generator)`` per batch, no labels."""

    def __init__(self, dataset: Dataset, batch: int, generator: torch.Generator) -> None:
        self.dataset = dataset
        self.batch = batch
        self.generator = generator  # the trainer's: its state is checkpointed there

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.dataset.sample(self.batch, self.generator), None

    def start(self) -> None:
        """Nothing to start: batches are drawn in the calling thread."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class EpochBatches:
    """Index batches of this rank, epoch after epoch without end, from ``(epoch, batch)``.

    Epoch ``e`` is ``randperm(n)`` seeded from ``(seed, e)``; its first
    ``world_size * per_rank`` entries are dealt out round-robin, so the shards are disjoint
    and equally long; the last incomplete batch of a shard is dropped.
    """

    def __init__(
        self, n: int, batch: int, seed: int, rank: int, world_size: int, start: tuple[int, int]
    ) -> None:
        self.n, self.batch, self.seed = n, batch, seed
        self.rank, self.world_size = rank, world_size
        self.per_epoch = (n // world_size) // batch
        self.start = start

    def shard(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, EPOCH_STREAM, epoch))
        order = torch.randperm(self.n, generator=generator)
        return order[: self.world_size * (self.n // self.world_size)][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        epoch, batch = self.start
        while True:
            shard = self.shard(epoch)
            for b in range(batch, self.per_epoch):
                yield shard[b * self.batch : (b + 1) * self.batch].tolist()
            epoch, batch = epoch + 1, 0


def default_workers(local_world_size: int) -> int:
    """Four loader processes per training process, fewer when the CPUs are shared."""
    return min(4, max(1, (os.cpu_count() or 1) // max(1, local_world_size)))


class IndexedStream:
    """An indexed data set read by a DataLoader over :class:`EpochBatches`, with random
    horizontal flips from a generator of its own (``dataset.hflip``)."""

    def __init__(
        self,
        dataset: IndexedDataset,
        batch: int,
        *,
        seed: int,
        rank: int,
        world_size: int,
        workers: int,
        pin_memory: bool,
    ) -> None:
        per_rank = len(dataset) // world_size
        if per_rank < batch:
            raise ConfigError(
                f"$.data.target: {len(dataset)} samples give {per_rank} per process over "
                f"{world_size} processes, fewer than one batch of {batch} (train.batch_size, "
                "train.coupling_batch)"
            )
        self.dataset = dataset
        self.batch = batch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.workers = workers
        self.pin_memory = pin_memory
        self.position = (0, 0)  # (epoch, batch within the epoch) of the next batch
        self.per_epoch = per_rank // batch
        self.flip_generator = torch.Generator().manual_seed(derived_seed(seed, FLIP_STREAM, rank))
        # Each new loader iterator draws its workers' base seed from this generator; without
        # one it would draw from torch's global generator, so a resumed run (whose loader
        # restarts) would take one draw more than an uninterrupted one and change its dropout.
        self.loader_generator = torch.Generator().manual_seed(
            derived_seed(seed, LOADER_STREAM, rank)
        )
        self._batches: Iterator[Any] | None = None

    def _loader(self) -> Iterator[Any]:
        sampler = EpochBatches(
            len(self.dataset), self.batch, self.seed, self.rank, self.world_size, self.position
        )
        # One pass over an endless sampler: the workers live as long as the run.
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if self.workers else None,
            generator=self.loader_generator,
        )
        return iter(loader)

    def start(self) -> None:
        """Start the loader (its worker processes) without taking a batch. The trainer calls
        this from the main thread before it couples in a background thread, so that worker
        processes are never forked from that thread while the main one is inside torch."""
        if self._batches is None:
            self._batches = self._loader()

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.start()
        samples, labels = next(self._batches)
        epoch, batch = self.position
        self.position = (epoch + 1, 0) if batch + 1 == self.per_epoch else (epoch, batch + 1)
        if self.dataset.hflip:
            flip = torch.rand(len(samples), generator=self.flip_generator) < 0.5
            flip = flip.view(-1, *[1] * (samples.dim() - 1))
            samples = torch.where(flip, samples.flip(-1), samples)
        if self.dataset.num_classes is None:
            return samples, None
        return samples, labels.long()

    def state(self) -> dict[str, Any]:
        return {
            "position": list(self.position),
            "flip_generator": self.flip_generator.get_state(),
            "loader_generator": self.loader_generator.get_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.close()
        self.position = tuple(state["position"])
        self.flip_generator.set_state(state["flip_generator"])
        if "loader_generator" in state:
            self.loader_generator.set_state(state["loader_generator"])

    def close(self) -> None:
        """Stop the loader's worker processes (a later ``next`` starts them again)."""
        self._batches = None


def target_stream(
    dataset: Dataset,
    batch: int,
    generator: torch.Generator,
    *,
    seed: int,
    rank: int,
    world_size: int,
    workers: int | None,
    pin_memory: bool,
) -> SampledStream | IndexedStream:
    if not is_indexed(dataset):
        return SampledStream(dataset, batch, generator)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return IndexedStream(
        dataset,
        batch,
        seed=seed,
        rank=rank,
        world_size=world_size,
        workers=default_workers(local) if workers is None else workers,
        pin_memory=pin_memory,
    )
