"""The Python API for notebooks and scripts: train a run, load a finished one, sample from it.

    run = mfm_core.train("tomlconfigs/quickstart.toml", overrides=["train.steps=500"])
    run.metrics["final_loss"], run.log[-1]["loss"]
    samples = run.sample(1000, solver={"name": "euler", "steps": 4})
    samples.x, samples.nfe

The runner's modules are imported when a function is called, so ``import mfm_core`` stays
light for plugin authors.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from mfm_core.config import Component, Config
from mfm_core.errors import ConfigError
from mfm_core.protocols import Solver

SolverSpec = str | Mapping[str, Any] | Solver


@attrs.frozen(kw_only=True)
class Samples:
    """``x``: the samples, (n, ...) float32 on the CPU; ``nfe``: the field evaluations the
    solver made per sample (the mean over batches); ``labels``: the classes sampled, for a
    class-conditional model."""

    x: torch.Tensor
    nfe: int
    labels: torch.Tensor | None = None


@attrs.frozen(kw_only=True)
class Run:
    """A finished (or checkpointed) run: its directory, resolved config, built pipeline,
    trained model (the EMA weights when the run kept them, in eval mode), the training step
    of those weights, its ``metrics`` (metrics.json; empty before the run's evaluation) and
    its loss ``log`` (log.jsonl: one record per logged step). A ``Run`` is also a path (its
    directory): ``load_run(run)`` and ``Path(run)`` work."""

    run_dir: Path
    config: Config
    pipeline: Any
    model: torch.nn.Module
    step: int
    metrics: dict[str, Any] = attrs.field(factory=dict)
    log: list[dict[str, Any]] = attrs.field(factory=list)

    def __fspath__(self) -> str:
        return str(self.run_dir)

    def sample(
        self,
        n: int,
        *,
        solver: SolverSpec | None = None,
        labels: torch.Tensor | Sequence[int] | int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> Samples:
        """Draw ``n`` samples from noise seeded by ``seed``.

        ``solver``: a registered solver's name (``"dopri5"``), a table
        (``{"name": "euler", "steps": 4}``) or a solver object; default: the run's ``solver``.
        ``labels``: for a class-conditional model, one class for all samples or one per
        sample (default: uniform classes). ``guidance``: the classifier-free guidance scale
        (default: the run's ``eval.guidance``).
        """
        from mfm_core.runner.evaluation.sampling import generate
        from mfm_core.runner.training.objective import autocast_dtype, is_conditional

        if n < 1:
            raise ConfigError(f"n must be a positive number of samples, got {n}")
        generator = torch.Generator().manual_seed(seed)
        noise = self.pipeline.source.sample(n, generator)
        classes = _labels(self.model, n, labels, generator, is_conditional(self.model))
        device = next(self.model.parameters()).device
        result = generate(
            self._solver(solver),
            self.model,
            noise,
            device,
            labels=classes,
            guidance=self.config.eval.guidance if guidance is None else guidance,
            batch_size=batch_size,
            dtype=autocast_dtype(self.config.train.precision, device),
        )
        return Samples(x=result.x1, nfe=result.nfe, labels=classes)

    def _solver(self, spec: SolverSpec | None) -> Solver:
        from mfm_core.registry import get_registry

        if spec is None:
            return self.pipeline.solver
        if isinstance(spec, (str, Mapping)):
            table = {"name": spec} if isinstance(spec, str) else dict(spec)
            if "name" not in table:
                raise ConfigError(f"solver {spec!r}: a table needs a 'name'")
            component = Component(name=table.pop("name"), params=table)
            return get_registry().create("solver", component.name, component.params)
        return spec


def _labels(
    model: torch.nn.Module,
    n: int,
    labels: torch.Tensor | Sequence[int] | int | None,
    generator: torch.Generator,
    conditional: bool,
) -> torch.Tensor | None:
    if not conditional:
        if labels is not None:
            raise ConfigError("labels: the run's model is not class-conditional")
        return None
    if labels is None:
        return torch.randint(model.num_classes, (n,), generator=generator)
    classes = torch.as_tensor(labels, dtype=torch.long)
    classes = classes.expand(n).clone() if classes.dim() == 0 else classes
    if classes.shape != (n,) or classes.min() < 0 or classes.max() >= model.num_classes:
        raise ConfigError(
            f"labels: expected one class in [0, {model.num_classes}) or {n} of them, "
            f"got shape {tuple(classes.shape)}"
        )
    return classes


def load_run(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    device: str | torch.device | None = None,
    step: int | None = None,
) -> Run:
    """Load ``run_dir``'s checkpoint of ``step`` (default: the newest that loads; its EMA
    weights when the run kept them) with the run's config after ``overrides``, on ``device``
    (default: the run's ``train.device``). ``run_dir`` may also be a ``.safetensors`` file of
    ``mfm export``: the model is built from the config in its metadata."""
    import json

    from mfm_core.runner.assembly.loading import load_run as load_trained
    from mfm_core.runner.rundir.layout import METRICS_FILE, read_log

    run_dir = Path(run_dir)
    trained = load_trained(
        run_dir, list(overrides), None if device is None else torch.device(device), step
    )
    metrics_file = run_dir / METRICS_FILE
    return Run(
        run_dir=run_dir,
        config=trained.config,
        pipeline=trained.pipeline,
        model=trained.model,
        step=trained.step,
        metrics=json.loads(metrics_file.read_text()) if metrics_file.is_file() else {},
        log=read_log(run_dir) if run_dir.is_dir() else [],
    )


def train(
    config: str | Path | Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    runs: str | Path = "runs",
    name: str = "run",
    progress: bool = False,
) -> Run:
    """Train and evaluate a new run, as ``mfm-run`` does, in a new directory under ``runs``;
    returns the finished :class:`Run` (its model, ``metrics`` and loss ``log``; it is also
    the path of its directory). ``config``: a TOML file, or the same tables as a dict (the
    run is then named ``name``). ``progress=True`` shows the training progress bar; the run's
    messages go to Python's ``logging`` (logger ``mfm_core``) either way, and to
    ``RUN/run.log``. In a dict config, a component may be a Python callable instead of a
    registered name (``"coupler": my_coupler``, or ``{"name": MyField, "width": 64}``): it
    is registered under its ``__name__`` for this run, as a plugin would register it; the
    run's config.toml names it, so a later ``load_run`` needs it registered (a plugin)."""
    from mfm_core.inline_components import extract_callables
    from mfm_core.registry import using_registry
    from mfm_core.runner.run import start_run

    if not isinstance(config, Mapping):
        return load_run(start_run(config, list(overrides), Path(runs), progress=progress))
    import tomli_w

    data, registry = extract_callables(config)
    with contextlib.ExitStack() as held, tempfile.TemporaryDirectory() as scratch:
        if registry is not None:
            held.enter_context(using_registry(registry))
        path = Path(scratch) / f"{name}.toml"
        path.write_bytes(tomli_w.dumps(data).encode())
        return load_run(start_run(path, list(overrides), Path(runs), progress=progress))
