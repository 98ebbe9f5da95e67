"""The exponential moving average of the weights: shadow weights, decay warm-up, state."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mfm_core.config import TrainConfig
from mfm_core.runner.training.schedules import ema_decay


class Ema:
    """Shadow weights ``ema <- ema + (1 - decay(step)) (weights - ema)`` of ``model``.

    ``AveragedModel`` holds the shadow weights and gives the checkpoint format (keys
    ``module.*`` and ``n_averaged``); the update is one fused lerp over tensor lists gathered
    once, without ``AveragedModel``'s per-step regrouping and its host synchronisations on
    ``n_averaged``. The first update copies the weights; buffers are copied every time.
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig) -> None:
        self.config = config
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema))
        self._lists = tuple(
            ([t.detach() for t in mine], [t.detach() for t in theirs])
            for mine, theirs in (
                (self.averaged.module.parameters(), model.parameters()),
                (self.averaged.module.buffers(), model.buffers()),
            )
        )
        self._started = False

    @property
    def module(self) -> torch.nn.Module:
        """The averaged model, for evaluation."""
        return self.averaged.module

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Average in the weights after optimizer step ``step`` (0-based)."""
        (ema_params, params), (ema_buffers, buffers) = self._lists
        if self._started:
            torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay(self.config, step))
        else:
            torch._foreach_copy_(ema_params, params)
            self._started = True
        if buffers:
            torch._foreach_copy_(ema_buffers, buffers)
        self.averaged.n_averaged += 1

    def weights_record(self, steps: int) -> dict[str, Any]:
        """``kind``, configured ``decay`` and the ``effective_decay`` of the last update after
        ``steps`` optimizer steps."""
        return {
            "kind": "ema",
            "decay": self.config.ema,
            "effective_decay": ema_decay(self.config, max(steps - 1, 0)),
            "step": steps,
        }

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)
        self._started = int(self.averaged.n_averaged) > 0
