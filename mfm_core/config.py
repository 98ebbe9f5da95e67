"""The run configuration: TOML tables structured into frozen attrs classes.

A component table is a ``name`` plus that component's own parameters; ``coupler = "exact"``
is shorthand for ``[coupler] name = "exact"``. The parameters are checked against the
component's factory when it is built (see ``mfm_core.registry.Registry.create``), so a plugin
never has to declare them twice.
"""

from __future__ import annotations

import copy
import math
import re
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import attrs

from mfm_core.errors import ConfigError
from mfm_core.schema import InvalidValue, below_one, converter, non_negative, positive, structure

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@attrs.frozen(kw_only=True)
class Component:
    """A component by registry name, with its parameters (every key of its table but name)."""

    name: str
    params: dict[str, Any] = attrs.field(factory=dict)

    def to_toml(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


def _structure_component(value: Any, _type: Any) -> Component:
    if isinstance(value, str):
        return Component(name=value)
    if not isinstance(value, dict):
        raise TypeError(f"expected a component name or a table with a name, got {value!r}")
    if "name" not in value:
        raise InvalidValue("name", "required key is missing (which component to use?)")
    params = dict(value)
    name = params.pop("name")
    if not isinstance(name, str):
        raise InvalidValue("name", f"expected a string, got {name!r}")
    return Component(name=name, params=params)


converter.register_structure_hook(Component, _structure_component)


def _device(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value == "mps":
        import torch

        if torch.backends.mps.is_available():
            return
        raise InvalidValue(attribute.name, "'mps' requested but this machine has no MPS device")
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return
    raise InvalidValue(attribute.name, f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")


@attrs.frozen(kw_only=True)
class DataConfig:
    """``source``: the noise distribution q0; ``target``: the data distribution q1.

    ``root`` is given as ``root`` to the data sets whose factory takes one and whose table
    does not set it; ``workers`` are the DataLoader processes reading a finite (indexed) data
    set, per training process (unset: ``min(4, CPUs per process)``).
    """

    source: Component = Component(name="gaussian")
    target: Component = Component(name="checkerboard")
    root: str | None = None
    workers: int | None = attrs.field(default=None, validator=non_negative)


@attrs.frozen(kw_only=True)
class TrainConfig:
    steps: int = attrs.field(default=2000, validator=positive)
    batch_size: int = attrs.field(default=256, validator=positive)
    lr: float = attrs.field(default=1e-3, validator=positive)
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    warmup_steps: int = attrs.field(default=0, validator=non_negative)
    lr_schedule: Literal["constant", "cosine", "polynomial"] = "constant"
    grad_clip: float | None = attrs.field(default=None, validator=positive)
    ema: float = attrs.field(default=0.0, validator=below_one)
    ema_warmup: bool = True
    seed: int = 0
    device: str = attrs.field(default="auto", validator=_device)
    checkpoint_every: int = attrs.field(default=500, validator=positive)
    keep_checkpoints: int = attrs.field(default=2, validator=positive)
    log_every: int = attrs.field(default=1, validator=positive)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    grad_accum: int = attrs.field(default=1, validator=positive)
    coupling_batch: int | None = attrs.field(default=None, validator=positive)
    cond_drop: float = attrs.field(default=0.0, validator=below_one)
    overlap_coupling: Literal["auto", "on", "off"] = "auto"
    trackers: list[Component] = attrs.field(factory=list)


def _default_eval_solvers() -> list[Component]:
    fixed = [Component(name="euler", params={"steps": n}) for n in (1, 2, 4, 8)]
    return [*fixed, Component(name="dopri5")]


@attrs.frozen(kw_only=True)
class EvalConfig:
    """What is measured after training, for every solver setting in ``solvers``."""

    num_samples: int = attrs.field(default=2000, validator=positive)
    solvers: list[Component] = attrs.field(factory=_default_eval_solvers)
    metrics: list[Component] | None = None
    loss_batches: int = attrs.field(default=20, validator=positive)
    trajectories: int = attrs.field(default=300, validator=non_negative)
    save_samples: bool = True
    seed: int = 1234
    guidance: float = 1.0
    grid: int = attrs.field(default=64, validator=positive)
    grid_every: int = attrs.field(default=0, validator=non_negative)
    batch_size: int | None = attrs.field(default=None, validator=positive)


@attrs.frozen(kw_only=True)
class Config:
    data: DataConfig = DataConfig()
    coupler: Component = Component(name="exact")
    path: Component = Component(name="cond-ot")
    model: Component = Component(name="mlp")
    solver: Component = Component(name="dopri5")
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


def _unstructure(value: Any) -> Any:
    if isinstance(value, Component):
        return value.to_toml()
    if attrs.has(type(value)):
        return {a.name: _unstructure(getattr(value, a.name)) for a in attrs.fields(type(value))}
    if isinstance(value, (list, tuple)):
        return [_unstructure(v) for v in value]
    if isinstance(value, dict):
        return {k: _unstructure(v) for k, v in value.items()}
    return value


def to_toml_dict(config: Config) -> dict[str, Any]:
    """The resolved config as plain TOML data (``None`` values left out: TOML has no null)."""

    def drop_none(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop_none(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [drop_none(v) for v in value]
        return value

    return drop_none(_unstructure(config))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.steps=500`` -> (["train", "steps"], 500). The value is read as a TOML value;
    what TOML cannot read is taken as a bare string, so ``coupler.name=exact`` works."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.steps=500")
    if key.count(".") >= MAX_DEPTH:
        raise ConfigError(
            f"override {key[:80]!r}...: more than {MAX_DEPTH} keys deep; a config needs a few"
        )
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        parsed = {"v": raw.strip()}
    except RecursionError:
        raise ConfigError(f"override {key!r}: the value is nested too deeply") from None
    if parsed.keys() != {"v"} or (isinstance(parsed["v"], str) and "\n" in raw.strip()):
        raise ConfigError(
            f"override {text!r}: the value must be one TOML value on one line, with nothing "
            "after it; put further settings in overrides of their own"
        )
    return key.split("."), parsed["v"]


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``key.sub=value`` override set.

    An override that changes a component's name (``coupler.name=independent``) replaces the
    component: the parameters the file gave the old one are dropped, those given as overrides
    (in any order) are kept.
    """
    data = copy.deepcopy(data)
    set_keys: dict[tuple[str, ...], set[str]] = {}
    renamed: list[tuple[str, ...]] = []
    for text in overrides:
        keys, value = parse_override(text)
        table = data
        for depth, key in enumerate(keys[:-1]):
            child = table.get(key)
            if isinstance(child, str):  # component shorthand: "exact" -> {name = "exact"}
                child = {"name": child}
            elif child is None:
                child = {}
            elif not isinstance(child, dict):
                where = "$." + ".".join(keys[: depth + 1])
                raise ConfigError(f"override {text!r}: {where} is {child!r}, not a table")
            table[key] = child
            table = child
        parent = tuple(keys[:-1])
        if keys[-1] == "name" and parent and table.get("name", value) != value:
            renamed.append(parent)
        old = table.get(keys[-1])
        if isinstance(old, dict) and isinstance(value, dict) and "name" not in old:
            # A settings table such as `train={steps=5}` sets those keys, not the whole table
            # (a component table with a name is replaced: it is another component).
            value = _merged(old, value)
        table[keys[-1]] = value
        set_keys.setdefault(parent, set()).add(keys[-1])
    for parent in renamed:
        table = data
        for key in parent[:-1]:
            table = table[key]
        component = table[parent[-1]]
        keep = set_keys[parent]
        table[parent[-1]] = {k: v for k, v in component.items() if k in keep}
    return data


def _merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            value = _merged(merged[key], value) if "name" not in merged[key] else value
        merged[key] = value
    return merged


MAX_DEPTH = 16
"""Tables and arrays nested deeper than this in a config are a mistake (a config needs five)."""
INT64 = (-(2**63), 2**63 - 1)
"""Integers beyond int64 cannot reach torch or numpy: every integer setting must fit."""


def check_values(value: Any, where: str = "$") -> None:
    """Every value of a config is usable: no NaN or infinity (``train.lr=nan``), integers
    within int64, nesting at most :data:`MAX_DEPTH` deep. Walks without recursion, so a
    hostile file nested thousands deep is an error, not a crash."""
    stack = [(value, where, 0)]
    while stack:
        item, at, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"{at[:80]}...: nested more than {MAX_DEPTH} tables or arrays deep; a config "
                "needs a few levels"
            )
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{at}: {item} is not a finite number")
        if (
            isinstance(item, int)
            and not isinstance(item, bool)
            and not (INT64[0] <= item <= INT64[1])
        ):
            raise ConfigError(
                f"{at}: {item} is beyond the 64-bit integers mfm computes with "
                f"({INT64[0]}..{INT64[1]})"
            )
        if isinstance(item, dict):
            stack += [(v, f"{at}.{k}", depth + 1) for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(v, f"{at}[{i}]", depth + 1) for i, v in enumerate(item)]


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file is a ConfigError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    return parse_toml(text, str(path))


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """Parse TOML ``text`` read from ``where`` and check its values (depth, int64); a
    malformed text is a ConfigError naming ``where``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"{where}: nested too deeply to read; a config needs a few levels"
        ) from None
    check_values(data, "$")
    return data


def _with_default_components(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Fill in the default of every component table (a table with a ``name``) the file
    leaves out, so an override such as ``coupler.cost=l1`` refines the default component
    instead of lacking a name."""
    merged = dict(data)
    for key, default in defaults.items():
        if isinstance(default, dict) and "name" in default:
            merged.setdefault(key, default)
        elif isinstance(default, dict) and isinstance(merged.get(key, {}), dict):
            merged[key] = _with_default_components(merged.get(key, {}), default)
    return merged


class ConfigProblems(ConfigError):
    """Every problem of a config's tables (one per line), and ``partial``: the config with
    each broken top-level table replaced by its default, named in ``broken``, so that the
    components of the sound tables can still be checked in the same round."""

    def __init__(self, message: str, partial: Config, broken: frozenset[str]) -> None:
        super().__init__(message)
        self.partial = partial
        self.broken = broken


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read, override and check a config file; a config with problems raises
    :class:`ConfigProblems` listing all of them."""
    return config_from_data(read_toml(path), overrides)


def config_from_data(data: dict[str, Any], overrides: list[str] = ()) -> Config:
    """Override and check config data already read (e.g. a shared weights file's config)."""
    data = _with_default_components(data, to_toml_dict(Config()))
    data = apply_overrides(data, list(overrides))
    check_values(data, "$")
    try:
        return structure(data, Config)
    except ConfigError as exc:
        sound, broken = {}, set()
        for name, type_ in typing.get_type_hints(Config).items():
            if name not in data:
                continue
            try:
                sound[name] = structure(data[name], type_, f"$.{name}")
            except ConfigError:
                broken.add(name)
        if not broken or set(data) - {f.name for f in attrs.fields(Config)}:
            raise
        raise ConfigProblems(str(exc), Config(**sound), frozenset(broken)) from exc
