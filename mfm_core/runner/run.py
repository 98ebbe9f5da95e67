"""Starting and resuming a run: build, train, evaluate, write the results.

Under torchrun every process runs the same function: each builds the run from the config
(so a bad config stops all of them alike, before they connect), then they train together;
only the main process writes the run directory and evaluates.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from mfm_core.config import Config, load_config, to_toml_dict
from mfm_core.errors import ConfigError, StoppedError
from mfm_core.registry import get_registry
from mfm_core.runner.assembly.loading import seeded_pipeline
from mfm_core.runner.assembly.pipeline import Pipeline, resolve_device
from mfm_core.runner.assembly.session import RunSession
from mfm_core.runner.evaluation import images, report
from mfm_core.runner.evaluation.evaluate import evaluate, write_grid
from mfm_core.runner.evaluation.results import write_results
from mfm_core.runner.rundir.checkpoint import probe_writable
from mfm_core.runner.rundir.layout import (
    CHECKPOINTS,
    CONFIG_FILE,
    create_run_dir,
    existing_run_dir,
    read_log,
    remove_stale_temporaries,
    run_log,
    write_config,
)
from mfm_core.runner.rundir.lock import run_lock
from mfm_core.runner.rundir.outcome import recorded_outcome
from mfm_core.runner.rundir.provenance import finish_session, session_record, start_session
from mfm_core.runner.tracking import Trackers
from mfm_core.runner.training.distributed import Distributed, from_environment, process_group
from mfm_core.runner.training.loop import Trainer
from mfm_core.runner.training.sizes import batch_sizes

logger = logging.getLogger(__name__)

GRIDS = "grids"


def _prepare(config: Config) -> tuple[Pipeline, Distributed, torch.device]:
    """Everything a process checks before it joins the others."""
    env = from_environment()
    device = resolve_device(config.train.device, env.local_rank)
    batch_sizes(config.train, env.world_size)
    return seeded_pipeline(config), env, device


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
            session = RunSession(
                config=config, pipeline=pipeline, run_dir=run_dir, env=env, device=device
            )
            trainer = Trainer(session)
            if env.is_main:
                held.enter_context(run_log(run_dir))
                held.enter_context(_recorded(session, trainer))
            held.callback(lambda: trainer.trackers.close())
            _train(session, trainer, progress=progress)
        if env.is_main:
            _finish(session, trainer)
        _release(trainer)
    return run_dir


def resume_run(run_dir: Path, overrides: list[str], progress: bool = True) -> Path:
    """Continue ``run_dir`` from its newest checkpoint (overrides, e.g. more steps, apply).
    Every process reads the run's config: on several nodes the run directory must be on a
    file system they share."""
    existing_run_dir(run_dir)
    config = load_config(run_dir / CONFIG_FILE, overrides)
    pipeline, env, device = _prepare(config)
    session = RunSession(config=config, pipeline=pipeline, run_dir=run_dir, env=env, device=device)
    with contextlib.ExitStack() as held:
        if env.is_main:
            held.enter_context(run_lock(run_dir))
            remove_stale_temporaries(run_dir)
            held.enter_context(run_log(run_dir))
        with process_group(env, device):
            trainer = Trainer(session)
            trainer.resume()  # a resume refused here leaves the recorded outcome as it was
            if env.is_main:
                held.enter_context(_recorded(session, trainer))
            held.callback(lambda: trainer.trackers.close())
            _train(session, trainer, progress=progress)
        if env.is_main:
            _finish(session, trainer)
        _release(trainer)
    return run_dir


def _release(trainer: Trainer) -> None:
    """Free the trainer (its DDP wrapper holds the process group's gloo threads) while the
    interpreter is fully alive: left to the collector at exit, a torchrun process could abort
    there ("terminate called without an active exception") after a run that succeeded."""
    trainer.ddp = trainer.network = None
    gc.collect()


@contextlib.contextmanager
def _recorded(session: RunSession, trainer: Trainer) -> Iterator[None]:
    """The session's outcome in the run directory (``outcome.json``); a stop by a signal
    says how to continue the run. The checkpoints folder is checked to be writable first,
    so a read-only one is found before training, not at the first checkpoint."""
    with recorded_outcome(session.run_dir, lambda: trainer.step):
        probe_writable(session.run_dir / CHECKPOINTS)
        try:
            yield
        except StoppedError as exc:
            raise exc.advising(["mfm-run", "--resume", str(session.run_dir)]) from None


def _train(session: RunSession, trainer: Trainer, *, progress: bool) -> None:
    config, pipeline, run_dir, env = session.config, session.pipeline, session.run_dir, session.env
    if env.is_main:
        # Written once the checkpoint has loaded: a resume whose overrides do not fit the run
        # leaves the run directory as it was.
        write_config(run_dir, to_toml_dict(config))
        start_session(run_dir, session_record(session.device, env.world_size))
        trainer.trackers = Trackers.open(
            config.train.trackers, get_registry(), run_dir, start_step=trainer.step
        )
        parameters = sum(p.numel() for p in trainer.model.parameters())
        processes = f" x {env.world_size} processes" if env.active else ""
        sizes = trainer.sizes
        coupled = sizes.coupling
        if env.active and getattr(pipeline.coupler, "scope", "local") == "global":
            coupled = f"{sizes.coupling * env.world_size} (all processes together)"
        logger.info(
            f"run {run_dir} on {session.device}{processes}: coupler {config.coupler.name}, "
            f"model {config.model.name} ({parameters:,} parameters), {config.train.steps} "
            f"steps of {config.train.batch_size} samples ({sizes.per_rank} per process in "
            f"micro-batches of {sizes.micro}, coupled {coupled} at a time"
            f"{', coupling in the background' if trainer.feed.overlap else ''})"
        )
    try:
        trainer.train(progress=progress, on_step=_grid_writer(session, trainer))
    except BaseException:
        trainer.trackers.close()
        raise
    record = trainer.coupling_record()
    if env.is_main and record is not None:
        share = 100 * record["waited_ms"] / record["step_ms"] if record["step_ms"] else 0.0
        logger.info(
            f"coupling: {record['coupling_ms']:.2f} ms per step, of which the step waited "
            f"{record['waited_ms']:.2f} ms ({share:.0f} % of its {record['step_ms']:.2f} ms"
            f"{'; coupled in the background' if record['background'] else ''}), over the "
            f"{record['steps']} steps of this session"
        )


def _grid_writer(session: RunSession, trainer: Trainer) -> Callable[[int], None] | None:
    """Every ``eval.grid_every`` steps, ``grids/step-N.png`` (image data only)."""
    config, pipeline = session.config, session.pipeline
    every = config.eval.grid_every
    if not every or not images.is_image_shape(tuple(pipeline.target.shape)):
        return None

    def write(step: int) -> None:
        if step % every == 0:
            path = trainer.run_dir / GRIDS / f"step-{step:08d}.png"
            write_grid(path, pipeline, trainer.eval_model, config, trainer.device)
            trainer.trackers.picture(step, GRIDS, path)

    return write


def _finish(session: RunSession, trainer: Trainer) -> None:
    """Evaluate (main process only) and write metrics, samples and pictures."""
    config = session.config
    metrics, samples = evaluate(
        session.pipeline, trainer.eval_model, config, trainer.sizes.coupling, session.device
    )
    metrics["weights"] = trainer.weights_record()
    metrics["train"] = {
        "steps": trainer.step,
        "seconds": round(trainer.elapsed, 2),
        "coupling": trainer.sizes.coupling,
    }
    record = trainer.coupling_record()
    if record is not None:
        metrics["train"]["coupling_time"] = record
    loss = report.training_loss(read_log(session.run_dir))
    if loss is not None:
        metrics["train"]["loss"] = loss
    metrics["provenance"] = finish_session(session.run_dir)
    pictures = write_results(session.run_dir, config, metrics, samples)
    trainer.trackers.evaluation(trainer.step, metrics, pictures)
