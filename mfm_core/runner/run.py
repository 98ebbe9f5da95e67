"""What the commands do: start a run, resume one, sample from one, validate a config."""

from __future__ import annotations

import operator
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfm_core.config import Config, load_config, to_toml_dict
from mfm_core.errors import ConfigError
from mfm_core.protocols import SolveResult
from mfm_core.registry import Registry, get_registry
from mfm_core.runner import plots
from mfm_core.runner.checkpoint import atomic_write, load_latest
from mfm_core.runner.evaluate import evaluate, solve
from mfm_core.runner.pipeline import COMPONENTS, Pipeline, build_pipeline, resolve_device
from mfm_core.runner.rundir import (
    CHECKPOINTS,
    CONFIG_FILE,
    METRICS_FILE,
    SAMPLES_FILE,
    create_run_dir,
    existing_run_dir,
    read_log,
    run_logger,
    write_config,
    write_json,
)
from mfm_core.runner.train import Trainer, draw_batch, flow_matching_loss, load_weights


def _seeded_pipeline(config: Config, registry: Registry | None = None) -> Pipeline:
    # The model's initial weights come from the global RNG: seed it before building.
    torch.manual_seed(config.train.seed)
    return build_pipeline(config, registry)


def start_run(
    config_path: str | Path, overrides: list[str], runs_root: Path, progress: bool = True
) -> Path:
    """Train and evaluate a new run of ``config_path``; returns its run directory."""
    config = load_config(config_path, overrides)
    pipeline = _seeded_pipeline(config)
    run_dir = create_run_dir(runs_root, Path(config_path).stem)
    _execute(config, pipeline, run_dir, resume=False, progress=progress)
    return run_dir


def resume_run(run_dir: Path, overrides: list[str], progress: bool = True) -> Path:
    """Continue ``run_dir`` from its newest checkpoint (overrides, e.g. more steps, apply)."""
    existing_run_dir(run_dir)
    config = load_config(run_dir / CONFIG_FILE, overrides)
    pipeline = _seeded_pipeline(config)
    _execute(config, pipeline, run_dir, resume=True, progress=progress)
    return run_dir


def _execute(
    config: Config, pipeline: Pipeline, run_dir: Path, *, resume: bool, progress: bool
) -> None:
    logger = run_logger(run_dir)
    device = resolve_device(config.train.device)
    trainer = Trainer(pipeline, config.train, device, run_dir)
    if resume:
        trainer.resume(logger)
    # Written once the checkpoint has loaded: a resume whose overrides do not fit the run
    # leaves the run directory as it was.
    write_config(run_dir, to_toml_dict(config))
    parameters = sum(p.numel() for p in trainer.model.parameters())
    logger.info(
        f"run {run_dir} on {device}: coupler {config.coupler.name}, model "
        f"{config.model.name} ({parameters:,} parameters), {config.train.steps} steps"
    )
    trainer.train(logger, progress=progress)
    metrics, samples = evaluate(
        pipeline, trainer.eval_model, config.eval, config.train.batch_size, device, logger
    )
    metrics["train"] = {"steps": trainer.step, "seconds": round(trainer.elapsed, 2)}
    write_json(run_dir / METRICS_FILE, metrics)
    if config.eval.save_samples:
        _save_samples(run_dir / SAMPLES_FILE, samples)
    logger.info(f"final loss {metrics['final_loss']:.4f}; wrote {run_dir / METRICS_FILE}")
    _pictures(run_dir, config, metrics, samples)


def _save_samples(path: Path, samples: dict[str, Any]) -> None:
    """``noise``, ``reference`` and ``generated_N`` for the N-th row of metrics.json."""
    arrays = {"noise": samples["noise"].numpy(), "reference": samples["reference"].numpy()}
    for index, generated in enumerate(samples["generated"]):
        arrays[f"generated_{index}"] = generated.numpy()
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def _pictures(run_dir: Path, config: Config, metrics: dict, samples: dict[str, Any]) -> None:
    log = read_log(run_dir)
    if log:
        plots.plot_loss(run_dir / "loss.png", log)
    if samples["reference"].shape[1:] != (2,):
        return  # scatter plots only make sense for 2-D data
    plots.plot_samples(
        run_dir / "samples.png", samples["reference"], samples["generated"], metrics["samples"]
    )
    if samples["trajectory"] is not None:
        result = samples["trajectory"]
        title = f"{config.coupler.name} coupling: {config.solver.name}, NFE {result.nfe}"
        plots.plot_trajectories(run_dir / "trajectories.png", result.trajectory, title)


def eval_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights to sample with from a checkpoint: the EMA weights when the run kept them."""
    if "ema" not in state:
        return state["model"]
    prefix = "module."
    return {k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)}


def sample_run(
    run_dir: Path, overrides: list[str], num: int, out: Path, seed: int = 0
) -> SolveResult:
    """Draw ``num`` samples from the newest checkpoint of ``run_dir`` into ``out``
    (``.npy``: the array; ``.npz``: ``samples`` and ``nfe``)."""
    if out.suffix not in (".npy", ".npz"):
        raise ConfigError(f"--out {str(out)!r}: expected a .npy or .npz file name")
    if num <= 0:
        raise ConfigError(f"--num must be positive, got {num}")
    existing_run_dir(run_dir)
    config = load_config(run_dir / CONFIG_FILE, overrides)
    pipeline = _seeded_pipeline(config)
    state, _, problems = load_latest(run_dir / CHECKPOINTS)
    for problem in problems:
        warnings.warn(f"skipped {problem}", stacklevel=2)
    device = resolve_device(config.train.device)
    model = pipeline.model
    load_weights(model, eval_weights(state), run_dir)
    model.to(device).eval()
    noise = pipeline.source.sample(num, torch.Generator().manual_seed(seed))
    result = solve(pipeline.solver, model, noise.to(device))
    array = result.x1.float().cpu().numpy()
    if out.suffix == ".npy":
        atomic_write(out, lambda handle: np.save(handle, array))
    else:
        atomic_write(out, lambda handle: np.savez(handle, samples=array, nfe=result.nfe))
    return result


def validate_config(
    config_path: str | Path, overrides: list[str], registry: Registry | None = None
) -> list[str]:
    """Build every component and push one tiny batch through coupler, path and model.
    Returns a description of what was built; raises ConfigError on any problem."""
    config = load_config(config_path, overrides)
    registry = registry or get_registry()
    pipeline = _seeded_pipeline(config, registry)
    resolve_device(config.train.device)
    generator = torch.Generator().manual_seed(config.train.seed)
    x0, x1 = draw_batch(pipeline, 4, generator, torch.device("cpu"))
    try:
        with torch.no_grad():
            flow_matching_loss(pipeline, pipeline.model, x0, x1, generator)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"a test batch through coupler, path and model failed: {exc}") from exc
    lines = []
    for key, kind in COMPONENTS:
        spec = operator.attrgetter(key)(config)
        entry = registry.get(kind, spec.name)
        lines.append(f"{key:12} {spec.name} ({entry.provider})")
    lines.append(
        f"eval         {len(pipeline.eval_solvers)} solver settings, "
        f"metrics: {', '.join(pipeline.metrics) or 'none'}"
    )
    return lines
