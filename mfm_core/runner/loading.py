"""Loading a trained run for sampling or evaluation: ``load_run`` (also the Python API)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from mfm_core.config import Config, load_config
from mfm_core.errors import CheckpointError
from mfm_core.runner.checkpoint import load_latest
from mfm_core.runner.pipeline import Pipeline, resolve_device
from mfm_core.runner.rundir import CHECKPOINTS, CONFIG_FILE, existing_run_dir
from mfm_core.runner.setup import seeded_pipeline


def load_weights(module: torch.nn.Module, weights: dict[str, Any], run_dir: Path) -> None:
    """Load a checkpoint's weights; a model that does not match them is a clear error."""
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1].strip()  # the mismatch itself
        raise CheckpointError(
            f"the checkpoints of {run_dir} do not fit the model the config now builds "
            f"(did an override change the model?): {detail}"
        ) from None


def eval_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights to sample with from a checkpoint: the EMA weights when the run kept them."""
    if "ema" not in state:
        return state["model"]
    prefix = "module."
    return {k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)}


@attrs.frozen(kw_only=True)
class Trained:
    """A run loaded for sampling or evaluation: its config, pipeline, trained model and the
    training step of the checkpoint the weights come from."""

    config: Config
    pipeline: Pipeline
    model: torch.nn.Module
    step: int
    weights: dict[str, Any]


def weights_record(state: dict[str, Any], config: Config) -> dict[str, Any]:
    """Which weights ``eval_weights`` gives, as ``Trainer.weights_record`` says it: the EMA
    (its configured and effective decay) or the raw weights, at the checkpoint's step."""
    from mfm_core.runner.train import ema_decay

    step = int(state["step"])
    if "ema" not in state:
        return {"kind": "raw", "step": step}
    return {
        "kind": "ema",
        "decay": config.train.ema,
        "effective_decay": ema_decay(config.train, max(step - 1, 0)),
        "step": step,
    }


def load_run(
    run_dir: Path, overrides: Sequence[str] = (), device: torch.device | None = None
) -> Trained:
    """The config (after ``overrides``), the built pipeline and the trained model of
    ``run_dir``: the newest checkpoint that loads (corrupted newer ones are skipped with a
    warning), its EMA weights when the run kept them, in eval mode on ``device`` (default: the
    run's ``train.device``)."""
    existing_run_dir(run_dir)
    config = load_config(run_dir / CONFIG_FILE, list(overrides))
    pipeline = seeded_pipeline(config)
    state, _, problems = load_latest(run_dir / CHECKPOINTS)
    for problem in problems:
        warnings.warn(f"skipped {problem}", stacklevel=2)
    model = pipeline.model
    load_weights(model, eval_weights(state), run_dir)
    model.to(device or resolve_device(config.train.device)).eval()
    return Trained(
        config=config,
        pipeline=pipeline,
        model=model,
        step=int(state["step"]),
        weights=weights_record(state, config),
    )
