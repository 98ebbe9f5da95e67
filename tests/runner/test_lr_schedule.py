"""The learning-rate factor of each schedule, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from mfm_core.config import TrainConfig
from mfm_core.runner.training.schedules import lr_factor


def factors(schedule: str) -> list[float]:
    config = TrainConfig(steps=10, warmup_steps=2, lr_schedule=schedule)
    return [lr_factor(config, step) for step in range(12)]


def test_warmup_is_linear_for_every_schedule():
    for schedule in ("constant", "cosine", "polynomial"):
        assert factors(schedule)[:2] == [0.5, 1.0]


def test_polynomial_decays_linearly_to_zero_at_the_last_step():
    # after 2 warm-up steps, 8 steps from 1 down to 0, then it stays at 0
    assert factors("polynomial")[2:] == pytest.approx([1 - k / 8 for k in range(9)] + [0.0])


def test_cosine_and_constant():
    cosine = factors("cosine")[2:]
    assert cosine == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * min(k, 8) / 8)) for k in range(10)]
    )
    assert factors("constant")[2:] == [1.0] * 10
