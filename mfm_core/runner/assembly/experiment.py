"""What a resume may change: the settings that define the experiment (the data, the coupler,
the path, the model, the seed, the batch) stay those the checkpoints were trained with, so a
run directory always describes what was trained. Each checkpoint holds its run's resolved
config; a resume compares the config it is given (the run's ``config.toml``, edited or not,
with the overrides) against it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mfm_core.errors import ConfigError

logger = logging.getLogger(__name__)

CHANGEABLE = (
    "train.steps",
    "train.lr",
    "train.weight_decay",
    "train.warmup_steps",
    "train.lr_schedule",
    "train.grad_clip",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.log_every",
    "train.device",
    "train.precision",
    "train.compile",
    "train.overlap_coupling",
    "data.workers",
    "solver",
    "eval",
)
"""The keys (and tables) a resume may change: how long and how fast to train, where and how
to compute, how often to save, and how to sample and evaluate. Everything else is fixed."""


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return flat


def _changeable(key: str) -> bool:
    return any(key == c or key.startswith(f"{c}.") for c in CHANGEABLE)


def changed_keys(trained: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The keys, outside :data:`CHANGEABLE`, whose values differ between the config the
    checkpoints were trained with and ``now`` (both as ``to_toml_dict`` gives them)."""
    before, after = _flat(trained), _flat(now)
    keys = sorted(set(before) | set(after))
    return [k for k in keys if not _changeable(k) and before.get(k) != after.get(k)]


def check_resumable(state: dict[str, Any], now: dict[str, Any], run_dir: Path) -> None:
    """A resume from checkpoint ``state`` with config ``now`` trains the same experiment
    further: it changes no fixed key and does not end before the checkpoint's step."""
    step = int(state["step"])
    steps = now.get("train", {}).get("steps")
    if isinstance(steps, int) and steps < step:
        raise ConfigError(
            f"$.train.steps: {steps}, but {run_dir} has trained {step} steps already; give "
            f"train.steps={step} or more (a run cannot be made shorter)"
        )
    trained = state.get("config")
    if not isinstance(trained, dict):
        logger.warning(
            f"warning: the checkpoint of {run_dir} does not record its config (an earlier "
            "mfm wrote it); the resume cannot check that the experiment is unchanged"
        )
        return
    changed = changed_keys(trained, now)
    if changed:
        shown = ", ".join(changed[:8]) + (", ..." if len(changed) > 8 else "")
        raise ConfigError(
            f"{run_dir}: a resume cannot change {shown} (the checkpoints were trained with "
            "other values); undo the change in config.toml, or start a new run with it. A "
            "resume may change only " + ", ".join(CHANGEABLE)
        )
