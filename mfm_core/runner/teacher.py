"""The teacher loader the runner gives to components that read a trained run (``reflow``).

Components never import the runner; the pipeline passes :func:`load_teacher` to a factory
that takes a ``load_teacher`` keyword.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mfm_core.config import Component, load_config
from mfm_core.errors import MfmError
from mfm_core.protocols import Solver
from mfm_core.runner.checkpoint import list_checkpoints
from mfm_core.runner.rundir import CHECKPOINTS, CONFIG_FILE
from mfm_core.schema import InvalidValue


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
            # The runner's modules bring torch.distributed, plotting and the data loaders:
            # import them when a teacher is first used, not with every coupler.
            from mfm_core.runner.loading import load_run

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
        from mfm_core.runner.objective import is_conditional

        return is_conditional(self._load(torch.device("cpu")))

    def solve(
        self, solver: Solver, x0: torch.Tensor, labels: torch.Tensor | None, guidance: float
    ) -> torch.Tensor:
        """``Phi(x0)``: ``solver`` on the teacher's field, on ``x0``'s device."""
        from mfm_core.runner.objective import autocast_dtype
        from mfm_core.runner.sampling import model_field

        model = self._load(x0.device).to(x0.device)  # nothing to do after the first call
        dtype = autocast_dtype(self.precision, x0.device)
        return solver(model_field(model, labels, guidance, dtype), x0).x1


def load_teacher(run: str) -> TrainedTeacher:
    """The trained run in directory ``run``, checked now (config, a checkpoint), its model
    loaded on first use. Raises ``InvalidValue`` for ``run``."""
    return TrainedTeacher(run)
