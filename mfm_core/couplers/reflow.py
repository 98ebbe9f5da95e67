"""Rectified flow's reflow step: pair each noise sample with where a trained flow takes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from mfm_core.adapters import check_inputs
from mfm_core.config import Component
from mfm_core.errors import MfmError
from mfm_core.protocols import Coupling, Solver
from mfm_core.registry import current_registry
from mfm_core.schema import InvalidValue, converter


class Teacher(Protocol):
    """A trained run, as the runner's loader gives it to ``reflow``.

    ``run``: its directory; ``shape``: one sample's shape; ``conditional``: whether its model
    needs labels; ``solver`` and ``guidance``: its config's top-level solver and
    ``eval.guidance``. ``solve`` integrates ``x0`` (k, ...) with ``solver`` on the teacher's
    field (loading the model on first use, onto ``x0``'s device) and returns ``Phi(x0)``.
    """

    run: str
    shape: tuple[int, ...]
    conditional: bool
    solver: Component
    guidance: float

    def solve(
        self, solver: Solver, x0: torch.Tensor, labels: torch.Tensor | None, guidance: float
    ) -> torch.Tensor: ...


LoadTeacher = Callable[[str], Teacher]
"""``load_teacher(run)``: the trained run in directory ``run``; raises ``InvalidValue`` for
``run`` when it is not one."""


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

    Args:
        run: the directory of the trained teacher run whose ODE solutions become the data side of
            the pairs.
        solver: the teacher's ODE solver, a component name or table; unset, the teacher run's own
            solver.
        guidance: the classifier-free guidance scale for a conditional teacher; unset, the teacher
            run's eval.guidance.
    """

    is_permutation = True
    draws_global_rng = False  # the teacher's solve is deterministic

    def __init__(
        self,
        *,
        run: str,
        solver: Component | None = None,
        guidance: float | None = None,
        load_teacher: LoadTeacher | None = None,
    ) -> None:
        if load_teacher is None:
            raise InvalidValue(
                "load_teacher",
                "reflow reads its teacher through the loader the runner provides; build it "
                "from a config (mfm run), or pass mfm_core.runner.assembly.loading.load_teacher",
            )
        self.teacher = load_teacher(run)
        self.run = self.teacher.run
        self.solver = _build_solver(self.teacher.solver if solver is None else solver)
        self.guidance = self.teacher.guidance if guidance is None else float(guidance)

    @torch.no_grad()
    def __call__(
        self, x0: torch.Tensor, x1: torch.Tensor, cond: torch.Tensor | None = None
    ) -> Coupling:
        check_inputs(x0, x1, cond)
        teacher = self.teacher
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
        return Coupling(i=index, j=index, cost=cost, is_permutation=True, samples=(x0, phi, cond))


def _build_solver(spec: Component | str | dict[str, Any]) -> Solver:
    """The teacher's solver; a bad table is an error under the coupler's ``solver`` key."""
    try:
        if not isinstance(spec, Component):
            spec = converter.structure(spec, Component)
        return current_registry().create("solver", spec.name, spec.params, path="solver")
    except MfmError as exc:
        # The registry names the bad key relative to "solver" ("solver.steps: ..."): hand it
        # on as that key, so the message carries the coupler's path in front of it.
        key, _, message = str(exc).partition(": ")
        raise InvalidValue(key, message) from exc
    except (TypeError, ValueError) as exc:
        raise InvalidValue("solver", str(exc)) from exc
