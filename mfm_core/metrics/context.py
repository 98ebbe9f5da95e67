"""Evaluation contexts for a plain velocity field, outside a run: for testing a metric, or for
scoring a field from a script::

    ctx = context_for_field(lambda x, t: -x, EulerSolver(steps=4), noise, reference=data)
    Straightness()(ctx)
"""

from __future__ import annotations

from typing import Any

import torch

from mfm_core.protocols import Dataset, EvalContext, Field, Solver, SolveResult


def context_for_field(
    field: Field,
    solver: Solver,
    noise: torch.Tensor,
    *,
    reference: torch.Tensor | None = None,
    source: Dataset | None = None,
    target: Dataset | None = None,
    **fields: Any,
) -> EvalContext:
    """The context of ``solver`` applied to ``noise`` under ``field`` (CPU tensors):
    ``generated`` is that solve, ``generate`` re-solves with any solver, ``reference``
    defaults to ``noise``. Other ``EvalContext`` fields (``loss``, ``model``, ``seed`` ...) are
    passed through."""

    def generate(
        other: Solver,
        x0: torch.Tensor,
        labels: torch.Tensor | None = None,
        trajectory: bool = False,
    ) -> SolveResult:
        with torch.no_grad():
            return other(field, x0, return_trajectory=trajectory)

    result = generate(solver, noise)
    return EvalContext(
        generated=result.x1,
        reference=noise if reference is None else reference,
        noise=noise,
        field=field,
        solve=result,
        solver=solver,
        make_field=lambda labels: field,
        generate=generate,
        source=source,
        target=target,
        **fields,
    )
