"""``mfm eval``: evaluate a trained run again, with other metrics or solvers, into a folder of
its own (``RUN/evals/NNNNN-eval/`` or ``--out``); the run's own results stay as they were."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from mfm_core.errors import ConfigError
from mfm_core.runner.assembly.loading import Trained, load_run
from mfm_core.runner.evaluation.evaluate import evaluate
from mfm_core.runner.evaluation.results import write_results
from mfm_core.runner.rundir.layout import (
    METRICS_FILE,
    create_run_dir,
    remove_stale_temporaries,
    remove_written,
    run_log,
)
from mfm_core.runner.rundir.lock import LOCK_FILE, run_lock
from mfm_core.runner.rundir.safepath import in_existing_folder
from mfm_core.runner.rundir.weights_file import is_weights_file
from mfm_core.runner.training.sizes import batch_sizes

logger = logging.getLogger(__name__)

EVALS = "evals"
"""The folder of a run that holds its later evaluations, one numbered folder each."""


@attrs.frozen(kw_only=True)
class Evaluation:
    """What ``mfm eval`` wrote: its ``directory``, the ``metrics`` (as in its metrics.json)
    and the ``pictures``."""

    directory: Path
    metrics: dict[str, Any]
    pictures: list[Path]


def eval_run(
    run_dir: Path, overrides: list[str], out: Path | None = None, step: int | None = None
) -> Evaluation:
    """Evaluate the checkpoint of ``step`` of ``run_dir`` (default: the newest) again, with
    the run's config after ``overrides`` (e.g. ``eval.metrics=[...]``, ``eval.solvers=[...]``),
    into ``out`` (a new or empty folder) or the next ``run_dir/evals/NNNNN-eval``:
    metrics.json (with the evaluation's settings, the weights' step and kind, and the training
    figures), metrics.md, the plots and samples.npz. Works on a run that stopped before its
    own evaluation too. ``run_dir`` may be a weights file of ``mfm export``, with ``out``.
    An evaluation that fails or is stopped removes what it wrote, and the folder it made."""
    if out is not None:
        out = in_existing_folder(out, "--out")
    if is_weights_file(run_dir):
        if out is None:
            raise ConfigError(f"give --out, a new folder for the evaluation of {run_dir}")
        run = load_run(run_dir, overrides, step=step)
        with _output_directory(run_dir, out) as directory:
            return _evaluate_again(run_dir, directory, run, overrides)
    run = load_run(run_dir, overrides, step=step)
    with run_lock(run_dir):
        remove_stale_temporaries(run_dir)
        with _output_directory(run_dir, out) as directory:
            return _evaluate_again(run_dir, directory, run, overrides)


@contextlib.contextmanager
def _output_directory(run_dir: Path, out: Path | None) -> Iterator[Path]:
    """The folder the evaluation writes, held for the ``with`` block: the next
    ``evals/NNNNN-eval`` (made exclusively), or ``out`` (resolved already), made or claimed
    exclusively: its lock is taken, then it must hold nothing else, so two evaluations into
    one ``--out`` never mix. On failure what was written is removed (see ``remove_written``)."""
    with contextlib.ExitStack() as held:
        created = out is None
        if out is None:
            directory = create_run_dir(run_dir / EVALS, "eval")
        else:
            directory = out
            try:
                directory.mkdir()
                created = True
            except FileExistsError:
                if not directory.is_dir():
                    raise ConfigError(
                        f"--out {str(out)!r} is a file; give a new or empty folder"
                    ) from None
            _check_empty(directory)
            held.enter_context(run_lock(directory))
            _check_empty(directory)  # again, holding the lock: no one else writes there
        try:
            yield directory
        except BaseException:
            held.close()  # the lock file is one of those removed: release it first
            remove_written(directory, remove_folder=created)
            raise
        if out is not None:
            (directory / LOCK_FILE).unlink(missing_ok=True)


def _check_empty(directory: Path) -> None:
    if any(p.name != LOCK_FILE for p in directory.iterdir()):
        raise ConfigError(
            f"--out {str(directory)!r} is not an empty folder; give a new folder (an "
            "evaluation never writes over other files)"
        )


def _training_figures(run_dir: Path, run: Trained) -> dict[str, Any]:
    """The run's own training figures (from its metrics.json) when they are of the weights
    being evaluated; otherwise the checkpoint's step and coupling size."""
    previous: Any = {}
    if (run_dir / METRICS_FILE).is_file():
        try:
            previous = json.loads((run_dir / METRICS_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = None
        if not isinstance(previous, dict) or not isinstance(previous.get("train") or {}, dict):
            warnings.warn(
                f"{run_dir / METRICS_FILE} is unreadable; the evaluation does without it",
                stacklevel=3,
            )
            previous = {}
    train = previous.get("train") or {}
    coupling = train.get("coupling") or batch_sizes(run.config.train, 1).coupling
    if train.get("steps") != run.step:  # trained on since (or never evaluated)
        train = {"steps": run.step, "coupling": coupling}
    return train


def _evaluate_again(
    run_dir: Path, directory: Path, run: Trained, overrides: list[str]
) -> Evaluation:
    config, pipeline, model = run.config, run.pipeline, run.model
    device = next(model.parameters()).device
    # a weights file has no run directory: its figures and log go with the evaluation
    home = directory if is_weights_file(run_dir) else run_dir
    train = _training_figures(home, run)
    with run_log(home):
        logger.info(f"eval {run_dir} at step {run.step} on {device} into {directory}")
        metrics, samples = evaluate(pipeline, model, config, train["coupling"], device)
        metrics["weights"] = run.weights
        metrics["train"] = train
        metrics["eval_overrides"] = list(overrides)
        pictures = write_results(directory, config, metrics, samples)
    return Evaluation(directory=directory, metrics=metrics, pictures=pictures)
