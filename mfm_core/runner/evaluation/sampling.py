"""Sampling a trained model: the model as a solver's field (with classifier-free guidance),
batched generation, and ``mfm sample``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from mfm_core.errors import ConfigError
from mfm_core.protocols import Solver, SolveResult
from mfm_core.runner.assembly.loading import load_run
from mfm_core.runner.assembly.pipeline import resolve_device
from mfm_core.runner.evaluation import images
from mfm_core.runner.rundir.checkpoint import atomic_write
from mfm_core.runner.rundir.safepath import in_existing_folder
from mfm_core.runner.training.objective import autocast_dtype, is_conditional, model_field

MAX_SAMPLES = 10_000_000  # `mfm sample --num`: beyond this the noise alone outgrows memory
SAMPLE_BATCH = 256  # images per solve in `mfm sample` when neither --batch nor eval.batch_size


@torch.no_grad()
def generate(
    solver: Solver,
    model: torch.nn.Module,
    noise: torch.Tensor,
    device: torch.device,
    *,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    trajectory: bool = False,
) -> SolveResult:
    """Integrate ``noise`` (on the CPU) in batches of ``batch_size`` (default: all at once) on
    ``device``; ``x1`` comes back on the CPU. ``nfe``: the mean over batches (an adaptive
    solver may take different steps for each). With ``trajectory``, the batches' trajectories
    (on the CPU) are joined along the sample axis; they share their times (a fixed-step grid,
    or the adaptive solver's evenly spaced output times)."""
    batch_size = batch_size or len(noise)
    outputs, nfes, paths, result = [], [], [], None
    for start in range(0, len(noise), batch_size):
        part = noise[start : start + batch_size].to(device)
        part_labels = None if labels is None else labels[start : start + batch_size].to(device)
        field = model_field(model, part_labels, guidance, dtype)
        result = solver(field, part, return_trajectory=trajectory)
        outputs.append(result.x1.float().cpu())
        nfes.append(result.nfe)
        if trajectory:
            paths.append(result.trajectory.float().cpu())
    return SolveResult(
        x1=torch.cat(outputs),
        nfe=round(sum(nfes) / len(nfes)),
        trajectory=torch.cat(paths, dim=1) if trajectory else None,
        times=None if result.times is None else result.times.cpu(),
    )


@attrs.frozen(kw_only=True)
class Sampled:
    """What ``mfm sample`` wrote: ``path`` (a file, or a directory of PNG files), the
    solver's NFE (the mean over batches) and the weights it used (``kind``, ``step``)."""

    path: Path
    nfe: int
    weights: dict[str, Any]


def _sample_format(out: Path, fmt: str | None, image: bool) -> str:
    """``npy``/``npz`` for vectors (by the file name); ``png`` or ``npz`` for images."""
    if out.is_dir() and (not image or out.suffix == ".npz"):
        raise ConfigError(f"--out {str(out)!r} is an existing directory; give a file name")
    if not image:
        if fmt == "png" or out.suffix not in (".npy", ".npz"):
            raise ConfigError(
                f"--out {str(out)!r}: the run's samples are vectors; expected a .npy or .npz "
                "file name"
            )
        return out.suffix[1:]
    fmt = fmt or ("npz" if out.suffix == ".npz" else "png")
    if fmt == "png" and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r}: PNG files go into a directory; this is a file")
    if fmt == "png" and out.is_dir() and any(out.iterdir()):
        raise ConfigError(
            f"--out {str(out)!r} is a directory that is not empty; give a new or empty one, "
            "so that no earlier samples are mixed with these"
        )
    return fmt


def sample_run(
    run_dir: Path,
    overrides: list[str],
    num: int,
    out: Path,
    seed: int = 0,
    *,
    fmt: str | None = None,
    guidance: float | None = None,
    batch: int | None = None,
    label: int | None = None,
    step: int | None = None,
) -> Sampled:
    """Draw ``num`` samples from the checkpoint of ``step`` of ``run_dir`` (default: the
    newest; ``run_dir`` may be a weights file of ``mfm export``) with the run's
    ``solver`` (after overrides), in batches of ``batch``, on the run's device.

    Vectors: ``out`` is a ``.npy`` (the array) or ``.npz`` (``samples`` and ``nfe``). Images:
    ``png`` writes ``out/000000.png`` ...; ``npz`` writes ``out`` (or ``out/samples.npz``)
    holding ``arr_0``, uint8 (num, H, W, C), and ``labels`` for a conditional model. A
    conditional model samples classes uniformly (or ``label``), with guidance scale
    ``guidance`` (default ``eval.guidance``).
    """
    if not 0 < num <= MAX_SAMPLES:
        raise ConfigError(f"--num must be in 1..{MAX_SAMPLES:,}, got {num}")
    if batch is not None and batch <= 0:
        raise ConfigError(f"--batch must be positive, got {batch}")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"--seed must be in 0..2**63-1, got {seed}")
    if guidance is not None and not math.isfinite(guidance):
        raise ConfigError(f"--guidance must be a finite number, got {guidance}")
    resolved = in_existing_folder(out, "--out")
    run = load_run(run_dir, overrides, step=step)
    config, pipeline, model = run.config, run.pipeline, run.model
    image = images.is_image_shape(tuple(pipeline.target.shape))
    fmt = _sample_format(out, fmt, image)
    out = resolved  # messages quote the path as given; files go where it resolves
    device = resolve_device(config.train.device)
    generator = torch.Generator().manual_seed(seed)
    noise = pipeline.source.sample(num, generator)
    labels = _sample_labels(model, num, label, generator)
    batch = batch or config.eval.batch_size or (SAMPLE_BATCH if image else num)
    options = {
        "guidance": config.eval.guidance if guidance is None else guidance,
        "dtype": autocast_dtype(config.train.precision, device),
    }
    if not image:
        result = generate(
            pipeline.solver, model, noise, device, **options, labels=labels, batch_size=batch
        )
        array = result.x1.numpy()
        if fmt == "npy":
            atomic_write(out, lambda handle: np.save(handle, array))
        else:
            atomic_write(out, lambda handle: np.savez(handle, samples=array, nfe=result.nfe))
        return Sampled(path=out, nfe=result.nfe, weights=run.weights)
    path = out if fmt == "png" or out.suffix == ".npz" else out / "samples.npz"
    if fmt == "png":
        out.mkdir(exist_ok=True)
    pixels, nfes = [], []
    for start in range(0, num, batch):
        some = None if labels is None else labels[start : start + batch]
        result = generate(
            pipeline.solver, model, noise[start : start + batch], device, **options, labels=some
        )
        nfes.append(result.nfe)
        converted = images.to_uint8(result.x1)
        if fmt == "png":
            for index, picture in enumerate(converted, start):
                images.save_png(out / f"{index:06d}.png", picture)
        else:
            pixels.append(converted)
    if fmt == "npz":
        arrays = {"arr_0": np.concatenate(pixels)}
        if labels is not None:
            arrays["labels"] = labels.numpy()
        atomic_write(path, lambda handle: np.savez(handle, **arrays))
    return Sampled(path=path, nfe=round(sum(nfes) / len(nfes)), weights=run.weights)


def _sample_labels(
    model: torch.nn.Module, num: int, label: int | None, generator: torch.Generator
) -> torch.Tensor | None:
    """Uniform class labels for a conditional model, or ``label`` for all samples."""
    if not is_conditional(model):
        if label is not None:
            raise ConfigError("--label: the run's model is not class-conditional")
        return None
    if label is None:
        return torch.randint(model.num_classes, (num,), generator=generator)
    if not 0 <= label < model.num_classes:
        raise ConfigError(f"--label must be in [0, {model.num_classes}), got {label}")
    return torch.full((num,), label, dtype=torch.long)
