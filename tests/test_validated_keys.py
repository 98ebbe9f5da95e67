"""Every validated key of the config rejects a bad value, naming the key: a table with one
rejected value for each, and a check that the table lists every validated key (a validator
that nothing makes reject anything, or a new key without a case, fails here)."""

from __future__ import annotations

import re
import typing

import attrs
import pytest

from mfm_core.config import Config, load_config
from mfm_core.errors import ConfigError

REJECTED = {
    "data.workers": -1,
    "train.steps": 0,
    "train.batch_size": -4,
    "train.lr": 0.0,
    "train.weight_decay": -0.1,
    "train.warmup_steps": -1,
    "train.lr_schedule": "linear",
    "train.grad_clip": 0.0,
    "train.ema": 1.0,
    "train.device": "gpu",
    "train.checkpoint_every": 0,
    "train.keep_checkpoints": 0,
    "train.log_every": 0,
    "train.precision": "fp16",
    "train.grad_accum": 0,
    "train.coupling_batch": 0,
    "train.cond_drop": 1.0,
    "train.overlap_coupling": "yes",
    "eval.num_samples": 0,
    "eval.loss_batches": 0,
    "eval.trajectories": -1,
    "eval.grid": 0,
    "eval.grid_every": -1,
    "eval.batch_size": 0,
}
"""One value each validated key must reject."""

ACCEPTED_EDGE = {
    "data.workers": 0,
    "train.weight_decay": 0.0,
    "train.warmup_steps": 0,
    "train.ema": 0.0,
    "train.cond_drop": 0.0,
    "eval.trajectories": 0,
    "eval.grid_every": 0,
    "train.steps": 1,
}
"""The boundary each non-negative or [0, 1) key still accepts (a validator off by one fails)."""


def _validated_keys() -> set[str]:
    keys = set()
    for table in attrs.fields(Config):
        if not attrs.has(table.type if isinstance(table.type, type) else type(table.default)):
            continue
        cls = type(table.default)
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            literal = typing.get_origin(hints[field.name]) is typing.Literal
            if field.validator is not None or literal:
                keys.add(f"{table.name}.{field.name}")
    return keys


def test_the_table_lists_every_validated_key():
    assert set(REJECTED) == _validated_keys()


def _toml(value) -> str:
    return f"{value!r}" if isinstance(value, str) else str(value).lower()


@pytest.mark.parametrize(("key", "value"), sorted(REJECTED.items()))
def test_every_validated_key_rejects_a_bad_value_naming_it(tmp_path, key, value):
    path = tmp_path / "c.toml"
    path.write_text("")
    with pytest.raises(ConfigError, match=re.escape(f"$.{key}:")):
        load_config(path, [f"{key}={_toml(value)}"])


@pytest.mark.parametrize(("key", "value"), sorted(ACCEPTED_EDGE.items()))
def test_the_boundary_values_are_accepted(tmp_path, key, value):
    path = tmp_path / "c.toml"
    path.write_text("")
    config = load_config(path, [f"{key}={_toml(value)}"])
    table, name = key.split(".")
    assert getattr(getattr(config, table), name) == value
