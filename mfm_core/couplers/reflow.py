"""Rectified flow's reflow step: pair each noise sample with where a trained flow takes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mfm_core.config import Component, load_config
from mfm_core.couplers.base import check_inputs
from mfm_core.errors import MfmError
from mfm_core.protocols import Coupling, Solver
from mfm_core.registry import get_registry
from mfm_core.runner.checkpoint import list_checkpoints
from mfm_core.runner.rundir import CHECKPOINTS, CONFIG_FILE
from mfm_core.schema import InvalidValue, converter


class ReflowCoupler:
    """Pairs each noise sample ``x0[i]`` with the teacher's ODE solution ``Phi(x0[i])``.

    The reflow step of rectified flow (Liu, Gong & Liu, "Flow Straight and Fast", ICLR 2023):
    a student trained on the pairs ``(x0, Phi(x0))`` of a trained flow (the teacher, run
    directory ``run``) learns a straighter flow between the same distributions.
    ``coupling.pairs(x0, x1, cond)`` returns ``(x0, Phi(x0), cond)``: **the data ``x1`` the
    runner drew is ignored**; the teacher's samples take its place. ``cond`` (the labels of
    ``x1``, shape (k,)) is kept as the pairs' labels, and a class-conditional teacher
    generates ``Phi(x0[i])`` for class ``cond[i]`` (so the student must be conditional too,
    or the runner passes no labels); an unconditional teacher gets no labels.

    ``solver``: the teacher's ODE solver, a component name or table (default: the teacher
    run's ``solver``). Every training step costs one teacher solve of the coupling batch, so
    a cheap fixed-step solver (``{ name = "euler", steps = 8 }``) keeps training fast.
    ``guidance``: the classifier-free guidance scale for a conditional teacher (default: its
    ``eval.guidance``).

    The run directory, its ``config.toml``, at least one checkpoint and the solver are
    checked when the coupler is built, so a mistake is a config error before training. The
    teacher's model is loaded on first call (newest checkpoint that loads, EMA weights when
    kept, eval mode), onto the device of ``x0``. The teacher solve is deterministic, so are
    the pairs; no gradient flows through them. ``Coupling.cost`` is the mean over pairs of
    ``|Phi(x0) - x0|^2``.
    """

    def __init__(
        self, *, run: str, solver: Component | None = None, guidance: float | None = None
    ) -> None:
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
        self.run = run_dir.resolve()
        self.solver = _build_solver(config.solver if solver is None else solver)
        self.guidance = config.eval.guidance if guidance is None else float(guidance)
        self._teacher: _Teacher | None = None

    @torch.no_grad()
    def __call__(
        self, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None = None
    ) -> Coupling:
        check_inputs(x0, x1, cond)
        if self._teacher is None:
            self._teacher = _Teacher(self.run, x0.device)
        teacher = self._teacher
        if tuple(x0.shape[1:]) != teacher.shape:
            raise ValueError(
                f"the teacher run {str(self.run)!r} generates samples of shape {teacher.shape}, "
                f"but the batch holds samples of shape {tuple(x0.shape[1:])}"
            )
        if teacher.conditional and cond is None:
            raise ValueError(
                f"the teacher run {str(self.run)!r} is class-conditional and needs the labels "
                "of the data: make the student conditional too (model.num_classes)"
            )
        x0 = x0.detach()
        labels = cond if teacher.conditional else None
        phi = teacher.solve(self.solver, x0, labels, self.guidance).to(x0.dtype)
        index = torch.arange(len(x0), device=x0.device)
        cost = (phi - x0).flatten(1).pow(2).sum(1).mean().item()
        return Coupling(i=index, j=index, cost=cost, is_permutation=True, gathered=(x0, phi, cond))


class _Teacher:
    """The teacher run's trained model, and what solving with it needs."""

    def __init__(self, run: Path, device: torch.device) -> None:
        # The runner's modules bring torch.distributed, plotting and the data loaders: import
        # them when a reflow coupler is first used, not with every coupler.
        from mfm_core.runner.run import load_run
        from mfm_core.runner.train import is_conditional

        # Building the teacher seeds the global RNG (for a model's initial weights, which the
        # checkpoint then replaces): leave the training run's random state as it was.
        with torch.random.fork_rng(devices=[]):
            trained = load_run(run, device=device)
        config, pipeline, model = trained.config, trained.pipeline, trained.model
        self.model = model
        self.shape = tuple(pipeline.target.shape)
        self.conditional = is_conditional(model)
        self.precision = config.train.precision

    def solve(
        self, solver: Solver, x0: torch.Tensor, labels: torch.Tensor | None, guidance: float
    ) -> torch.Tensor:
        """``Phi(x0)``: ``solver`` on the teacher's field, on ``x0``'s device."""
        from mfm_core.runner.evaluate import model_field
        from mfm_core.runner.train import autocast_dtype

        self.model.to(x0.device)  # nothing to do after the first call on a device
        dtype = autocast_dtype(self.precision, x0.device)
        return solver(model_field(self.model, labels, guidance, dtype), x0).x1


def _build_solver(spec: Component | str | dict[str, Any]) -> Solver:
    """The teacher's solver; a bad table is an error under the coupler's ``solver`` key."""
    try:
        if not isinstance(spec, Component):
            spec = converter.structure(spec, Component)
        return get_registry().create("solver", spec.name, spec.params, path="solver")
    except MfmError as exc:
        # The registry names the bad key relative to "solver" ("solver.steps: ..."): hand it
        # on as that key, so the message carries the coupler's path in front of it.
        key, _, message = str(exc).partition(": ")
        raise InvalidValue(key, message) from exc
    except (TypeError, ValueError) as exc:
        raise InvalidValue("solver", str(exc)) from exc
