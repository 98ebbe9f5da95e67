"""Loading a run: the seeded pipeline every command builds first, a trained run's weights for
sampling or evaluation (``load_run``, also the Python API), and the trained teacher that
``reflow`` reads through the ``load_teacher`` service.

Building a pipeline may load a trained run (a teacher), which builds a pipeline of its own:
that recursion stays inside this module, and the pipeline receives it as a service.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from mfm_core.config import Component, Config, config_from_data, load_config, to_toml_dict
from mfm_core.errors import CheckpointError, ConfigError, MfmError
from mfm_core.protocols import Solver
from mfm_core.registry import Registry
from mfm_core.runner.assembly.pipeline import (
    Pipeline,
    build_pipeline,
    load_pipeline,
    resolve_device,
)
from mfm_core.runner.rundir.checkpoint import list_checkpoints, load_checkpoint, load_latest
from mfm_core.runner.rundir.layout import CHECKPOINTS, CONFIG_FILE, existing_run_dir
from mfm_core.runner.rundir.weights_file import is_weights_file, read_weights_file
from mfm_core.runner.training.objective import autocast_dtype, is_conditional, model_field
from mfm_core.runner.training.schedules import ema_decay
from mfm_core.schema import InvalidValue


def seeded_pipeline(config: Config, registry: Registry | None = None) -> Pipeline:
    """The pipeline of ``config``, checked against its data; the model's initial weights
    come from the global RNG, seeded here with ``train.seed``."""
    torch.manual_seed(config.train.seed)
    pipeline = build_pipeline(config, registry, services=SERVICES)
    _check_labels(config, pipeline)
    return pipeline


def load_seeded(
    config_path: str | Path, overrides: Sequence[str] = (), registry: Registry | None = None
) -> tuple[Config, Pipeline]:
    """Read a config and build its seeded, checked pipeline; every problem of the config's
    tables and of its components is reported in one round."""
    config, pipeline = load_pipeline(config_path, overrides, registry, SERVICES)
    _check_labels(config, pipeline)
    return config, pipeline


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


def load_weights(module: Any, weights: dict[str, Any], run_dir: Path) -> None:
    """Load a checkpoint's weights into ``module`` (anything with torch's ``load_state_dict``);
    a model that does not match them is a clear error."""
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
    step = int(state["step"])
    if "ema" not in state:
        return {"kind": "raw", "step": step}
    return {
        "kind": "ema",
        "decay": config.train.ema,
        "effective_decay": ema_decay(config.train, max(step - 1, 0)),
        "step": step,
    }


def checkpoint_state(run_dir: Path, step: int | None = None) -> dict[str, Any]:
    """The checkpoint of ``step`` in ``run_dir``, read; default: the newest that loads
    (corrupted newer ones are skipped with a warning)."""
    directory = run_dir / CHECKPOINTS
    if step is None:
        state, _, problems = load_latest(directory)
        for problem in problems:
            warnings.warn(f"skipped {problem}", stacklevel=3)
        return state
    found = dict(list_checkpoints(directory))
    if step not in found:
        steps = ", ".join(str(s) for s in sorted(found)) or "none"
        raise CheckpointError(
            f"{run_dir} has no checkpoint of step {step}; its checkpoints are of steps {steps}"
        )
    return load_checkpoint(found[step])


def _load_coupler_state(pipeline: Pipeline, state: dict[str, Any], config: Config) -> None:
    """The coupler as trained: a stateful coupler's state from the checkpoint (e.g. the
    fitted potentials of ``semidiscrete``), which the final loss and ``coupling_gap`` use.
    Not when an override changed the coupler: the new one starts from its preparation."""
    saved = state.get("coupler")  # checkpoints of runs before stateful couplers hold none
    trained_with = state.get("config", {}).get("coupler")
    if saved and trained_with == to_toml_dict(config)["coupler"]:
        pipeline.coupler.load_state_dict(saved)


def load_run(
    run_dir: Path,
    overrides: Sequence[str] = (),
    device: torch.device | None = None,
    step: int | None = None,
) -> Trained:
    """The config (after ``overrides``), the built pipeline and the trained model of
    ``run_dir``: the checkpoint of ``step``, by default the newest that loads (corrupted newer
    ones are skipped with a warning), its EMA weights when the run kept them, in eval mode on
    ``device`` (default: the run's ``train.device``). ``run_dir`` may also be a weights file
    written by ``mfm export`` (``.safetensors``): the model is built from its config."""
    if is_weights_file(run_dir):
        shared = read_weights_file(run_dir)
        if step is not None and step != shared.record.get("step"):
            raise ConfigError(
                f"--step {step}: {run_dir} holds the weights of step "
                f"{shared.record.get('step')} only"
            )
        config = config_from_data(shared.config, list(overrides))
        weights, record = shared.weights, shared.record
    else:
        existing_run_dir(run_dir)
        config = load_config(run_dir / CONFIG_FILE, list(overrides))
        state = checkpoint_state(run_dir, step)
        weights, record = eval_weights(state), weights_record(state, config)
    pipeline = seeded_pipeline(config)
    if not is_weights_file(run_dir):
        _load_coupler_state(pipeline, state, config)
    model = pipeline.model
    load_weights(model, weights, run_dir)
    model.to(device or resolve_device(config.train.device)).eval()
    return Trained(
        config=config, pipeline=pipeline, model=model, step=int(record["step"]), weights=record
    )


class TrainedTeacher:
    """A trained run (the ``Teacher`` protocol of ``mfm_core.couplers.reflow``): its config is
    read when built, its model on the first ``solve``."""

    def __init__(self, run: str) -> None:
        run_dir = Path(run).expanduser()
        if not (run_dir / CONFIG_FILE).is_file():
            problem = "does not exist" if not run_dir.exists() else f"holds no {CONFIG_FILE}"
            raise InvalidValue(
                "run", f"{str(run)!r} {problem}; expected the directory of a trained run"
            )
        if not list_checkpoints(run_dir / CHECKPOINTS):
            raise InvalidValue(
                "run",
                f"{str(run)!r} holds no checkpoint in {CHECKPOINTS}/; train the teacher run "
                "first (or wait for its first checkpoint)",
            )
        try:
            config = load_config(run_dir / CONFIG_FILE)
        except MfmError as exc:
            raise InvalidValue("run", f"the teacher's {CONFIG_FILE} is invalid: {exc}") from exc
        self.run = str(run_dir.resolve())
        self.solver: Component = config.solver
        self.guidance = config.eval.guidance
        self.precision = config.train.precision
        self._model: torch.nn.Module | None = None
        self._shape: tuple[int, ...] | None = None

    def _load(self, device: torch.device) -> torch.nn.Module:
        if self._model is None:
            # Building the teacher seeds the global RNG (for a model's initial weights, which
            # the checkpoint then replaces): leave the training run's random state as it was.
            with torch.random.fork_rng(devices=[]):
                trained = load_run(Path(self.run), device=device)
            self._model = trained.model
            self._shape = tuple(trained.pipeline.target.shape)
        return self._model

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape (loads the model on the CPU if it is not loaded yet)."""
        if self._shape is None:
            self._load(torch.device("cpu"))
        return self._shape

    @property
    def conditional(self) -> bool:
        return is_conditional(self._load(torch.device("cpu")))

    def solve(
        self, solver: Solver, x0: torch.Tensor, labels: torch.Tensor | None, guidance: float
    ) -> torch.Tensor:
        """``Phi(x0)``: ``solver`` on the teacher's field, on ``x0``'s device."""

        model = self._load(x0.device).to(x0.device)  # nothing to do after the first call
        dtype = autocast_dtype(self.precision, x0.device)
        return solver(model_field(model, labels, guidance, dtype), x0).x1


def load_teacher(run: str) -> TrainedTeacher:
    """The trained run in directory ``run``, checked now (config, a checkpoint), its model
    loaded on first use. Raises ``InvalidValue`` for ``run``."""
    return TrainedTeacher(run)


SERVICES = {"load_teacher": load_teacher}
"""What the runner offers the factories that take it (see ``build_pipeline``)."""
