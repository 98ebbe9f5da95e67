"""``mfm eval``: evaluate a trained run again, with other metrics or solvers."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from mfm_core.runner.evaluate import evaluate
from mfm_core.runner.loading import Trained, load_run
from mfm_core.runner.results import write_results
from mfm_core.runner.rundir import METRICS_FILE, remove_stale_temporaries, run_log
from mfm_core.runner.runlock import run_lock
from mfm_core.runner.train import batch_sizes

logger = logging.getLogger(__name__)


def eval_run(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Evaluate the newest checkpoint of ``run_dir`` again, with the run's config after
    ``overrides`` (e.g. ``eval.metrics=[...]``, ``eval.solvers=[...]``): rewrites metrics.json
    (keeping the training figures), metrics.md, the plots and samples.npz. Works on a run that
    stopped before its own evaluation too. Returns the new metrics."""
    run = load_run(run_dir, overrides)
    with run_lock(run_dir):
        remove_stale_temporaries(run_dir)
        return _evaluate_again(run_dir, run, overrides)


def _evaluate_again(run_dir: Path, run: Trained, overrides: list[str]) -> dict[str, Any]:
    config, pipeline, model = run.config, run.pipeline, run.model
    device = next(model.parameters()).device
    previous: dict[str, Any] = {}
    if (run_dir / METRICS_FILE).is_file():
        try:
            previous = json.loads((run_dir / METRICS_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = None
        if not isinstance(previous, dict) or not isinstance(previous.get("train") or {}, dict):
            warnings.warn(f"{run_dir / METRICS_FILE} is unreadable; writing it anew", stacklevel=2)
            previous = {}
    train = previous.get("train") or {}
    coupling = train.get("coupling") or batch_sizes(config.train, 1).coupling
    if train.get("steps") != run.step:  # trained on since (or never evaluated)
        train = {"steps": run.step, "coupling": coupling}
    with run_log(run_dir):
        logger.info(f"eval {run_dir} at step {run.step} on {device}")
        metrics, samples = evaluate(pipeline, model, config, coupling, device)
        metrics["train"] = train
        if overrides:
            metrics["eval_overrides"] = list(overrides)
        write_results(run_dir, config, metrics, samples)
    return metrics
