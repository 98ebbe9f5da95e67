"""ODE solvers that integrate a learned velocity field from t=0 to t=1."""

from mfm_core.solvers.adaptive import Dopri5Solver
from mfm_core.solvers.fixed_step import (
    ButcherTableau,
    EulerSolver,
    FixedStepSolver,
    HeunSolver,
    MidpointSolver,
    RK4Solver,
)

__all__ = [
    "ButcherTableau",
    "Dopri5Solver",
    "EulerSolver",
    "FixedStepSolver",
    "HeunSolver",
    "MidpointSolver",
    "RK4Solver",
]
