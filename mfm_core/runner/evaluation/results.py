"""Writing what an evaluation produced into the run directory: metrics.json, metrics.md,
samples.npz and the pictures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfm_core.config import Config
from mfm_core.runner.evaluation import images, plots, report
from mfm_core.runner.evaluation.evaluate import save_image_panels
from mfm_core.runner.rundir.checkpoint import atomic_write
from mfm_core.runner.rundir.layout import METRICS_FILE, SAMPLES_FILE, read_log, write_json

logger = logging.getLogger(__name__)


def write_results(
    out_dir: Path,
    config: Config,
    metrics: dict[str, Any],
    samples: dict[str, Any],
    *,
    log_dir: Path | None = None,
) -> list[Path]:
    """metrics.json, metrics.md, the plots and (with ``eval.save_samples``) samples.npz into
    ``out_dir``; ``loss.png`` from the training log of ``log_dir`` (default ``out_dir``).
    Returns the pictures written."""
    write_json(out_dir / METRICS_FILE, metrics)
    if config.eval.save_samples:
        _save_samples(out_dir / SAMPLES_FILE, samples, metrics["samples"])
    report.write_run_report(out_dir, metrics)
    logger.info(f"wrote {out_dir / METRICS_FILE}")
    _pictures(out_dir, log_dir or out_dir, config, metrics, samples)
    names = ("samples.png", "trajectories.png", "loss.png", report.PLOT_FILE)
    return [out_dir / name for name in names if (out_dir / name).is_file()]


def sample_keys(rows: list[dict[str, Any]]) -> list[str]:
    """One samples.npz key per solver setting: ``euler-1``, ``midpoint-4``, ``dopri5``; a
    setting listed twice gets ``-2``, ``-3``, ... after its key."""
    keys: list[str] = []
    for row in rows:
        key = f"{row['solver']}-{row['steps']}" if "steps" in row else str(row["solver"])
        base, count = key, 2
        while key in keys:
            key, count = f"{base}-{count}", count + 1
        keys.append(key)
    return keys


def _save_samples(path: Path, samples: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """``reference`` and one array per solver setting of metrics.json, keyed by
    :func:`sample_keys` (``euler-1``, ..., ``dopri5``), plus ``noise`` for vectors and the
    trajectory of the run's ``solver`` (``trajectory``: (T, n, ...), and ``trajectory_nfe``)
    when there is one; images as uint8 (n, H, W, C)."""
    if samples["image"]:
        arrays = {"reference": images.to_uint8(samples["reference"])}
        convert = images.to_uint8
    else:
        arrays = {"noise": samples["noise"].numpy(), "reference": samples["reference"].numpy()}
        convert = torch.Tensor.numpy
    for key, generated in zip(sample_keys(rows), samples["generated"], strict=True):
        arrays[key] = convert(generated)
    if samples["trajectory"] is not None:
        arrays["trajectory"] = samples["trajectory"].trajectory.float().cpu().numpy()
        arrays["trajectory_nfe"] = np.array(samples["trajectory"].nfe)
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def _pictures(
    run_dir: Path, log_dir: Path, config: Config, metrics: dict, samples: dict[str, Any]
) -> None:
    log = read_log(log_dir)
    if log:
        plots.plot_loss(run_dir / "loss.png", log)
    if samples["image"]:
        save_image_panels(
            run_dir / "samples.png",
            samples["reference"],
            samples["generated"],
            metrics["samples"],
            config.eval.grid,
            labels=samples["labels"],
            reference_labels=samples["reference_labels"],
            num_classes=samples["num_classes"],
        )
        return
    if samples["reference"].shape[1:] != (2,):
        return  # scatter plots only make sense for 2-D data
    plots.plot_samples(
        run_dir / "samples.png", samples["reference"], samples["generated"], metrics["samples"]
    )
    if samples["trajectory"] is not None:
        result = samples["trajectory"]
        title = f"{config.coupler.name} coupling: {config.solver.name}, NFE {result.nfe}"
        plots.plot_trajectories(run_dir / "trajectories.png", result.trajectory, title)
