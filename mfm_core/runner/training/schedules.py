"""The schedules of training: the learning rate and the EMA decay, as functions of the step,
and the settings a resumed optimizer takes from the config."""

from __future__ import annotations

import math
from typing import Any

from mfm_core.config import TrainConfig


def ema_decay(config: TrainConfig, step: int) -> float:
    """The EMA decay of the update after optimizer step ``step`` (0-based):
    ``min(ema, (1 + step) / (10 + step))`` with ``ema_warmup``, else ``ema``.

    With the warm-up the average covers about the last tenth of a short run instead of
    reaching back to the random initial weights (at decay 0.999 a 300-step run would
    otherwise evaluate weights that are still three quarters initial); from step
    ``(10 ema - 1) / (1 - ema)`` on (8990 steps for 0.999) the full decay applies.
    """
    if not config.ema_warmup:
        return config.ema
    return min(config.ema, (1.0 + step) / (10.0 + step))


def lr_factor(config: TrainConfig, step: int) -> float:
    """The learning rate at ``step`` relative to ``config.lr``: a linear warmup, then constant,
    a cosine decay to zero at ``config.steps``, or a polynomial decay of power 1 (linear) to
    zero at ``config.steps``."""
    warmup = config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if config.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    if config.lr_schedule == "polynomial":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_settings(config: TrainConfig, optimizer: Any, scheduler: Any) -> None:
    """Set the config's ``lr`` and ``weight_decay`` over what a loaded optimizer and
    scheduler state hold, so a resume with changed settings trains with them (the
    schedule's shape already comes from the config); the current learning rate is that
    of the schedule at this step."""
    scheduler.base_lrs = [config.lr] * len(optimizer.param_groups)
    factor = lr_factor(config, scheduler.last_epoch)
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr
        group["lr"] = config.lr * factor
        group["weight_decay"] = config.weight_decay
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
