"""What the commands do: start a run, resume one, sample from one, validate a config.

Under torchrun every process runs the same function: each builds the run from the config
(so a bad config stops all of them alike, before they connect), then they train together;
only the main process writes the run directory and evaluates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import operator
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from mfm_core.config import Config, load_config, to_toml_dict
from mfm_core.errors import ConfigError
from mfm_core.registry import Registry, get_registry
from mfm_core.runner import images, plots, report
from mfm_core.runner.checkpoint import atomic_write, load_latest
from mfm_core.runner.distributed import Distributed, from_environment, process_group
from mfm_core.runner.evaluate import evaluate, generate, save_image_panels, write_grid
from mfm_core.runner.pipeline import (
    COMPONENTS,
    Pipeline,
    build_pipeline,
    load_pipeline,
    resolve_device,
)
from mfm_core.runner.rundir import (
    CHECKPOINTS,
    CONFIG_FILE,
    METRICS_FILE,
    SAMPLES_FILE,
    create_run_dir,
    existing_run_dir,
    read_log,
    remove_stale_temporaries,
    run_logger,
    write_config,
    write_json,
)
from mfm_core.runner.runlock import run_lock
from mfm_core.runner.train import (
    Trainer,
    autocast_dtype,
    batch_sizes,
    draw_batch,
    flow_matching_loss,
    is_conditional,
    load_weights,
)

GRIDS = "grids"
MAX_SAMPLES = 10_000_000  # `mfm sample --num`: beyond this the noise alone outgrows memory
SAMPLE_BATCH = 256  # images per solve in `mfm sample` when neither --batch nor eval.batch_size


def _seeded_pipeline(config: Config, registry: Registry | None = None) -> Pipeline:
    # The model's initial weights come from the global RNG: seed it before building.
    torch.manual_seed(config.train.seed)
    pipeline = build_pipeline(config, registry)
    _check_labels(config, pipeline)
    return pipeline


def _check_labels(config: Config, pipeline: Pipeline) -> None:
    """A class-conditional model needs labelled data with no more classes than it has."""
    if not is_conditional(pipeline.model):
        return
    classes = getattr(pipeline.target, "num_classes", None)
    wanted = pipeline.model.num_classes
    if classes is None:
        raise ConfigError(
            f"$.model.num_classes: the model is class-conditional, but the target data set "
            f"'{config.data.target.name}' has no labels; leave num_classes out"
        )
    if classes > wanted:
        raise ConfigError(
            f"$.model.num_classes: {wanted}, but the target data set "
            f"'{config.data.target.name}' has {classes} classes"
        )


def _prepare(config: Config) -> tuple[Pipeline, Distributed, torch.device]:
    """Everything a process checks before it joins the others."""
    env = from_environment()
    device = resolve_device(config.train.device, env.local_rank)
    batch_sizes(config.train, env.world_size)
    return _seeded_pipeline(config), env, device


def start_run(
    config_path: str | Path,
    overrides: list[str],
    runs_root: Path,
    progress: bool = True,
    *,
    run_dir: Path | None = None,
) -> Path:
    """Train and evaluate a new run of ``config_path``; returns its run directory: a new
    numbered directory under ``runs_root``, or ``run_dir`` when given (made if missing; it
    must hold no run yet)."""
    config = load_config(config_path, overrides)
    pipeline, env, device = _prepare(config)
    if run_dir is not None and (run_dir / CONFIG_FILE).exists():
        raise ConfigError(f"{str(run_dir)!r} already holds a run; resume it instead")
    with contextlib.ExitStack() as held:
        with process_group(env, device):
            created = None
            if env.is_main:
                if run_dir is None:
                    created = create_run_dir(runs_root, Path(config_path).stem)
                else:
                    run_dir.mkdir(parents=True, exist_ok=True)
                    created = run_dir
                held.enter_context(run_lock(created))
                if (created / CONFIG_FILE).exists():  # another process started it meanwhile
                    raise ConfigError(f"{str(created)!r} already holds a run; resume it instead")
            run_dir = env.broadcast(created)
            trainer, logger = _train(
                config, pipeline, run_dir, env, device, resume=False, progress=progress
            )
        if env.is_main:
            _finish(config, pipeline, trainer, run_dir, device, logger)
    return run_dir


def resume_run(run_dir: Path, overrides: list[str], progress: bool = True) -> Path:
    """Continue ``run_dir`` from its newest checkpoint (overrides, e.g. more steps, apply).
    Every process reads the run's config: on several nodes the run directory must be on a
    file system they share."""
    existing_run_dir(run_dir)
    config = load_config(run_dir / CONFIG_FILE, overrides)
    pipeline, env, device = _prepare(config)
    with contextlib.ExitStack() as held:
        if env.is_main:
            held.enter_context(run_lock(run_dir))
            remove_stale_temporaries(run_dir)
        with process_group(env, device):
            trainer, logger = _train(
                config, pipeline, run_dir, env, device, resume=True, progress=progress
            )
        if env.is_main:
            _finish(config, pipeline, trainer, run_dir, device, logger)
    return run_dir


def _quiet_logger() -> logging.Logger:
    """The logger of the processes other than the main one: they report nothing."""
    logger = logging.getLogger("mfm.run.other-rank")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def _train(
    config: Config,
    pipeline: Pipeline,
    run_dir: Path,
    env: Distributed,
    device: torch.device,
    *,
    resume: bool,
    progress: bool,
) -> tuple[Trainer, logging.Logger]:
    logger = run_logger(run_dir) if env.is_main else _quiet_logger()
    trainer = Trainer(pipeline, config, device, run_dir, env)
    if resume:
        trainer.resume(logger)
    if env.is_main:
        # Written once the checkpoint has loaded: a resume whose overrides do not fit the run
        # leaves the run directory as it was.
        write_config(run_dir, to_toml_dict(config))
    parameters = sum(p.numel() for p in trainer.model.parameters())
    processes = f" x {env.world_size} processes" if env.active else ""
    sizes = trainer.sizes
    coupled = sizes.coupling
    if env.active and getattr(pipeline.coupler, "scope", "local") == "global":
        coupled = f"{sizes.coupling * env.world_size} (all processes together)"
    logger.info(
        f"run {run_dir} on {device}{processes}: coupler {config.coupler.name}, model "
        f"{config.model.name} ({parameters:,} parameters), {config.train.steps} steps of "
        f"{config.train.batch_size} samples ({sizes.per_rank} per process in micro-batches "
        f"of {sizes.micro}, coupled {coupled} at a time)"
    )
    trainer.train(logger, progress=progress, on_step=_grid_writer(config, pipeline, trainer))
    return trainer, logger


def _grid_writer(
    config: Config, pipeline: Pipeline, trainer: Trainer
) -> Callable[[int], None] | None:
    """Every ``eval.grid_every`` steps, ``grids/step-N.png`` (image data only)."""
    every = config.eval.grid_every
    if not every or not images.is_image_shape(tuple(pipeline.target.shape)):
        return None

    def write(step: int) -> None:
        if step % every == 0:
            path = trainer.run_dir / GRIDS / f"step-{step:08d}.png"
            write_grid(path, pipeline, trainer.eval_model, config, trainer.device)

    return write


def _finish(
    config: Config,
    pipeline: Pipeline,
    trainer: Trainer,
    run_dir: Path,
    device: torch.device,
    logger: logging.Logger,
) -> None:
    """Evaluate (main process only) and write metrics, samples and pictures."""
    metrics, samples = evaluate(
        pipeline, trainer.eval_model, config, trainer.sizes.coupling, device, logger
    )
    metrics["train"] = {
        "steps": trainer.step,
        "seconds": round(trainer.elapsed, 2),
        "coupling": trainer.sizes.coupling,
    }
    _write_results(run_dir, config, metrics, samples, logger)


def _write_results(
    run_dir: Path,
    config: Config,
    metrics: dict[str, Any],
    samples: dict[str, Any],
    logger: logging.Logger,
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


def load_run(
    run_dir: Path, overrides: Sequence[str] = (), device: torch.device | None = None
) -> Trained:
    """The config (after ``overrides``), the built pipeline and the trained model of
    ``run_dir``: the newest checkpoint that loads (corrupted newer ones are skipped with a
    warning), its EMA weights when the run kept them, in eval mode on ``device`` (default: the
    run's ``train.device``)."""
    existing_run_dir(run_dir)
    config = load_config(run_dir / CONFIG_FILE, list(overrides))
    pipeline = _seeded_pipeline(config)
    state, _, problems = load_latest(run_dir / CHECKPOINTS)
    for problem in problems:
        warnings.warn(f"skipped {problem}", stacklevel=2)
    model = pipeline.model
    load_weights(model, eval_weights(state), run_dir)
    model.to(device or resolve_device(config.train.device)).eval()
    return Trained(config=config, pipeline=pipeline, model=model, step=int(state["step"]))


@attrs.frozen(kw_only=True)
class Sampled:
    """What ``mfm sample`` wrote: ``path`` (a file, or a directory of PNG files) and the
    solver's NFE (the mean over batches)."""

    path: Path
    nfe: int


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
) -> Sampled:
    """Draw ``num`` samples from the newest checkpoint of ``run_dir`` with the run's
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
    run = load_run(run_dir, overrides)
    config, pipeline, model = run.config, run.pipeline, run.model
    image = images.is_image_shape(tuple(pipeline.target.shape))
    fmt = _sample_format(out, fmt, image)
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
        return Sampled(path=out, nfe=result.nfe)
    path = out if fmt == "png" or out.suffix == ".npz" else out / "samples.npz"
    if fmt == "png":
        out.mkdir(parents=True, exist_ok=True)
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
    return Sampled(path=path, nfe=round(sum(nfes) / len(nfes)))


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


def validate_config(
    config_path: str | Path, overrides: list[str], registry: Registry | None = None
) -> list[str]:
    """Build every component and push one tiny batch through coupler, path and model.
    Returns a description of what was built; raises ConfigError on any problem."""
    registry = registry or get_registry()
    config, pipeline = load_pipeline(config_path, overrides, registry)
    _check_labels(config, pipeline)
    verify = getattr(pipeline.target, "verify", None)
    if callable(verify):  # e.g. every file of an image folder is readable
        verify()
    env = from_environment()
    resolve_device(config.train.device, env.local_rank)
    sizes = batch_sizes(config.train, env.world_size)
    generator = torch.Generator().manual_seed(config.train.seed)
    x0, x1, labels = draw_batch(pipeline, 4, generator, torch.device("cpu"))
    cond = labels if is_conditional(pipeline.model) else None
    try:
        with torch.no_grad():
            flow_matching_loss(pipeline, pipeline.model, x0, x1, generator, cond)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"a test batch through coupler, path and model failed: {exc}") from exc
    lines = []
    for key, kind in COMPONENTS:
        spec = operator.attrgetter(key)(config)
        entry = registry.get(kind, spec.name)
        lines.append(f"{key:12} {spec.name} ({entry.provider})")
    lines.append(
        f"train        {sizes.per_rank} samples per process and step, micro-batches of "
        f"{sizes.micro}, coupled {sizes.coupling} at a time"
    )
    lines.append(
        f"eval         {len(pipeline.eval_solvers)} solver settings, "
        f"metrics: {', '.join(pipeline.metrics) or 'none'}"
    )
    return lines


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
    logger = run_logger(run_dir)
    logger.info(f"eval {run_dir} at step {run.step} on {device}")
    metrics, samples = evaluate(pipeline, model, config, coupling, device, logger)
    metrics["train"] = train
    if overrides:
        metrics["eval_overrides"] = list(overrides)
    _write_results(run_dir, config, metrics, samples, logger)
    return metrics
