"""Writing what an evaluation produced into the run directory: metrics.json, metrics.md,
samples.npz and the pictures."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfm_core.config import Config
from mfm_core.runner import images, plots, report
from mfm_core.runner.checkpoint import atomic_write
from mfm_core.runner.evaluate import save_image_panels
from mfm_core.runner.rundir import METRICS_FILE, SAMPLES_FILE, read_log, write_json

logger = logging.getLogger(__name__)


def write_results(
    run_dir: Path,
    config: Config,
    metrics: dict[str, Any],
    samples: dict[str, Any],
) -> None:
    """metrics.json, metrics.md, the plots and (with ``eval.save_samples``) samples.npz."""
    write_json(run_dir / METRICS_FILE, metrics)
    if config.eval.save_samples:
        _save_samples(run_dir / SAMPLES_FILE, samples)
    report.write_run_report(run_dir, metrics)
    logger.info(f"final loss {metrics['final_loss']:.4f}; wrote {run_dir / METRICS_FILE}")
    _pictures(run_dir, config, metrics, samples)


def _save_samples(path: Path, samples: dict[str, Any]) -> None:
    """``reference`` and ``generated_N`` for the N-th row of metrics.json, plus ``noise`` for
    vectors and the trajectory of the run's ``solver`` (``trajectory``: (T, n, ...), and
    ``trajectory_nfe``) when there is one; images as uint8 (n, H, W, C)."""
    if samples["image"]:
        arrays = {"reference": images.to_uint8(samples["reference"])}
        convert = images.to_uint8
    else:
        arrays = {"noise": samples["noise"].numpy(), "reference": samples["reference"].numpy()}
        convert = torch.Tensor.numpy
    for index, generated in enumerate(samples["generated"]):
        arrays[f"generated_{index}"] = convert(generated)
    if samples["trajectory"] is not None:
        arrays["trajectory"] = samples["trajectory"].trajectory.float().cpu().numpy()
        arrays["trajectory_nfe"] = np.array(samples["trajectory"].nfe)
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def _pictures(run_dir: Path, config: Config, metrics: dict, samples: dict[str, Any]) -> None:
    log = read_log(run_dir)
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
