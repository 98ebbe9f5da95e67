"""How one optimizer step's batch splits over processes, micro-batches and couplings."""

from __future__ import annotations

import attrs

from mfm_core.config import TrainConfig
from mfm_core.errors import ConfigError


@attrs.frozen(kw_only=True)
class BatchSizes:
    """``per_rank`` samples per optimizer step on each process, in ``grad_accum`` micro-batches
    of ``micro``; ``coupling`` samples are drawn and coupled together."""

    per_rank: int
    micro: int
    coupling: int


def batch_sizes(config: TrainConfig, world_size: int) -> BatchSizes:
    """Split the global ``train.batch_size``; sizes that do not divide are errors."""
    if config.batch_size % world_size:
        raise ConfigError(
            f"$.train.batch_size: the global batch of {config.batch_size} does not split "
            f"evenly over {world_size} processes"
        )
    per_rank = config.batch_size // world_size
    if per_rank % config.grad_accum:
        raise ConfigError(
            f"$.train.grad_accum: the batch of {per_rank} per process does not split into "
            f"{config.grad_accum} equal micro-batches"
        )
    micro = per_rank // config.grad_accum
    coupling = config.coupling_batch or per_rank
    if coupling % micro:
        raise ConfigError(
            f"$.train.coupling_batch: {coupling} is not a multiple of the micro-batch of "
            f"{micro} (train.batch_size / processes / train.grad_accum)"
        )
    return BatchSizes(per_rank=per_rank, micro=micro, coupling=coupling)
