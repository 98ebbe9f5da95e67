"""Config files: structure, shorthand, overrides, and errors that name the key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from mfm_core.config import (
    Component,
    Config,
    apply_overrides,
    load_config,
    parse_override,
    to_toml_dict,
)
from mfm_core.errors import ConfigError
from mfm_core.schema import structure

ROOT = Path(__file__).resolve().parents[1]


def check_error(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        structure(data, Config)
    assert expected in str(info.value), str(info.value)


def test_shipped_quickstart_config_loads():
    config = load_config(ROOT / "tomlconfigs" / "quickstart.toml")
    assert config.coupler == Component(name="exact", params={"cost": "sqeuclidean"})
    assert config.data.target.name == "checkerboard"
    assert [s.name for s in config.eval.solvers][-1] == "dopri5"


def test_component_shorthand_and_table_are_the_same():
    short = structure({"coupler": "exact"}, Config)
    table = structure({"coupler": {"name": "exact"}}, Config)
    assert short.coupler == table.coupler == Component(name="exact")
    with_params = structure({"coupler": {"name": "exact", "cost": "l1"}}, Config)
    assert with_params.coupler.params == {"cost": "l1"}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"trian": {}}, "$.trian: unknown key; did you mean 'train'?"),
        ({"train": {"batchsize": 3}}, "$.train.batchsize: unknown key; did you mean 'batch_size'?"),
        ({"train": {"batch_size": -4}}, "$.train.batch_size: must be positive, got -4"),
        ({"train": {"steps": 2.5}}, "$.train.steps: expected an integer, got 2.5 (float)"),
        ({"train": {"lr": "fast"}}, "$.train.lr: expected a number, got 'fast' (str)"),
        ({"train": {"ema": 1.0}}, "$.train.ema: must be in [0, 1), got 1.0"),
        ({"train": {"device": "gpu"}}, "$.train.device: expected 'auto', 'cpu', 'cuda'"),
        ({"train": {"lr_schedule": "linear"}}, "$.train.lr_schedule: expected one of"),
        ({"train": 3}, "$.train: expected a table, got 3 (int)"),
        ({"coupler": {"cost": "l1"}}, "$.coupler.name: required key is missing"),
        ({"coupler": 7}, "$.coupler: expected a component name or a table"),
        ({"eval": {"solvers": ["euler", 5]}}, "$.eval.solvers[1]: expected a component name"),
        ({"data": {"target": {"name": 1}}}, "$.data.target.name: expected a string, got 1"),
        ({"data": {"workers": -1}}, "$.data.workers: must be zero or positive, got -1"),
        ({"data": {"root": 3}}, "$.data.root: expected a string, got 3 (int)"),
        ({"train": {"precision": "fp16"}}, "$.train.precision: expected one of 'auto', 'fp32'"),
        ({"train": {"grad_accum": 0}}, "$.train.grad_accum: must be positive, got 0"),
        ({"train": {"coupling_batch": -8}}, "$.train.coupling_batch: must be positive, got -8"),
        ({"train": {"cond_drop": 1.0}}, "$.train.cond_drop: must be in [0, 1), got 1.0"),
        ({"train": {"compile": "yes"}}, "$.train.compile: expected true or false, got 'yes'"),
        (
            {"train": {"overlap_coupling": True}},
            "$.train.overlap_coupling: expected one of 'auto', 'on', 'off', got True",
        ),
        ({"eval": {"grid": 0}}, "$.eval.grid: must be positive, got 0"),
        ({"eval": {"grid_every": -1}}, "$.eval.grid_every: must be zero or positive, got -1"),
        ({"eval": {"guidance": "strong"}}, "$.eval.guidance: expected a number, got 'strong'"),
    ],
)
def test_errors_name_the_full_key_path(data, expected):
    check_error(data, expected)


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as info:
        structure({"train": {"steps": "a", "seed": "b"}}, Config)
    assert "$.train.steps" in str(info.value) and "$.train.seed" in str(info.value)


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.toml' does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize(
    ("text", "keys", "value"),
    [
        ("train.steps=500", ["train", "steps"], 500),
        ("train.lr=1e-3", ["train", "lr"], 1e-3),
        ("model.hidden=[256,256]", ["model", "hidden"], [256, 256]),
        ("coupler.name=independent", ["coupler", "name"], "independent"),
        ('coupler.name="exact"', ["coupler", "name"], "exact"),
        ("train.device=cuda:1", ["train", "device"], "cuda:1"),
        ("eval.metrics=[]", ["eval", "metrics"], []),
    ],
)
def test_overrides_are_toml_values_or_bare_strings(text, keys, value):
    assert parse_override(text) == (keys, value)


@pytest.mark.parametrize("text", ["train.steps", "=3", "train..steps=3"])
def test_malformed_override_is_an_error(text):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override(text)


def test_override_into_component_shorthand_keeps_the_name():
    data = apply_overrides({"coupler": "exact"}, ["coupler.cost=l1"])
    assert data == {"coupler": {"name": "exact", "cost": "l1"}}
    with pytest.raises(ConfigError, match=r"\$\.train\.steps is 3, not a table"):
        apply_overrides({"train": {"steps": 3}}, ["train.steps.x=1"])


def test_renaming_a_component_drops_the_old_components_parameters():
    data = {"solver": {"name": "dopri5", "atol": 1e-5}, "coupler": {"name": "exact", "cost": "l1"}}
    changed = apply_overrides(data, ["solver.steps=4", "solver.name=euler", "coupler.name=exact"])
    assert changed["solver"] == {"name": "euler", "steps": 4}
    assert changed["coupler"] == {"name": "exact", "cost": "l1"}
    assert data["solver"] == {"name": "dopri5", "atol": 1e-5}
    nested = apply_overrides(
        {"data": {"target": {"name": "file", "path": "x.npy"}}}, ["data.target.name=moons"]
    )
    assert nested["data"]["target"] == {"name": "moons"}


def test_resolved_config_round_trips_through_toml():
    config = load_config(ROOT / "tomlconfigs" / "quickstart.toml", ["train.grad_clip=1.0"])
    import tomllib

    again = structure(tomllib.loads(tomli_w.dumps(to_toml_dict(config))), Config)
    assert again == config


def test_override_refines_a_default_component_the_file_leaves_out(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nsteps = 3\n")
    config = load_config(path, ["coupler.cost=l1", "data.target.scale=2.0"])
    assert config.coupler == Component(name="exact", params={"cost": "l1"})
    assert config.data.target == Component(name="checkerboard", params={"scale": 2.0})
    assert config.data.source == Component(name="gaussian")


def test_a_scalar_where_a_list_belongs():
    check_error({"eval": {"solvers": "euler"}}, "$.eval.solvers: expected a list, got 'euler'")
