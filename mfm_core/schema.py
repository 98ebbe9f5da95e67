"""Strict structuring of TOML data into attrs classes, with errors that name the full key path.

cattrs does the structuring; this module makes it strict (``2.5`` is not an int, ``"3"`` is
not a float, unknown keys are errors) and turns its nested exception groups into one message
per problem, such as ``$.train.batch_size: must be positive, got -4``.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn

from mfm_core.errors import ConfigError

T = TypeVar("T")


class InvalidValue(ValueError):
    """Raised by a validator: ``name`` is the attribute, the message says what is wrong."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def _type_name(value: Any) -> str:
    return type(value).__name__


def _strict(expected: str, accepts: Callable[[Any], bool], convert: Callable[[Any], Any]):
    def hook(value: Any, _type: Any) -> Any:
        if not accepts(value):
            raise TypeError(f"expected {expected}, got {value!r} ({_type_name(value)})")
        return convert(value)

    return hook


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _structure_literal(value: Any, type_: Any) -> Any:
    choices = typing.get_args(type_)
    if value not in choices:
        raise TypeError(f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _is_homogeneous_sequence(type_: Any) -> bool:
    """``list[X]`` or ``tuple[X, ...]``."""
    origin, args = typing.get_origin(type_), typing.get_args(type_)
    return origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis)


def make_converter() -> cattrs.Converter:
    """A cattrs converter that rejects unknown keys and lossy conversions."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    int_hook = _strict("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool), int)
    converter.register_structure_hook(int, int_hook)
    converter.register_structure_hook(float, _strict("a number", _is_number, float))
    converter.register_structure_hook(str, _strict("a string", lambda v: isinstance(v, str), str))
    converter.register_structure_hook(
        bool, _strict("true or false", lambda v: isinstance(v, bool), bool)
    )
    converter.register_structure_hook_func(
        lambda t: typing.get_origin(t) is Literal, _structure_literal
    )
    converter.register_structure_hook(Any, lambda value, _type: value)

    def protocol_hook(value: Any, type_: Any) -> Any:
        if not isinstance(value, type_):
            raise TypeError(f"expected a {type_.__name__}, got {value!r} ({_type_name(value)})")
        return value

    # A component built in Python (``create("metric", "fid", features=PixelFeatures())``)
    converter.register_structure_hook_func(
        lambda t: getattr(t, "_is_runtime_protocol", False), protocol_hook
    )

    def table_hook(cls: type) -> Callable[[Any, Any], Any]:
        structure_fields = make_dict_structure_fn(cls, converter)

        known = set(_field_names(cls))

        def hook(value: Any, _type: Any) -> Any:
            if not isinstance(value, dict):
                raise TypeError(f"expected a table, got {value!r} ({_type_name(value)})")
            return _structure_table(value, cls, known, structure_fields)

        return hook

    converter.register_structure_hook_factory(attrs.has, table_hook)

    def sequence_hook(type_: Any) -> Callable[[Any, Any], Any]:
        is_list = typing.get_origin(type_) is list
        factory = list_structure_factory if is_list else homogenous_tuple_structure_factory
        structure_items = factory(type_, converter)

        def hook(value: Any, _type: Any) -> Any:
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"expected a list, got {value!r} ({_type_name(value)})")
            return structure_items(value, type_)

        return hook

    converter.register_structure_hook_factory(_is_homogeneous_sequence, sequence_hook)
    return converter


def _structure_table(
    value: dict[str, Any], cls: type, known: set[str], structure_fields: Callable[..., Any]
) -> Any:
    """Structure one table and report every problem of it at once: unknown keys, values of
    the wrong type and values its validators reject (attrs would stop at the first)."""
    problems: list[Exception] = []
    extra = set(value) - known
    if extra:
        problems.append(ForbiddenExtraKeysError("", cls, extra))
    was_disabled = attrs.validators.get_disabled()
    attrs.validators.set_disabled(True)
    try:
        instance = structure_fields({k: v for k, v in value.items() if k in known}, cls)
    except ClassValidationError as exc:
        problems.append(exc)
        instance = None
    finally:
        attrs.validators.set_disabled(was_disabled)
    for field in attrs.fields(cls) if instance is not None else ():
        if field.validator is None:
            continue
        try:
            field.validator(instance, field, getattr(instance, field.name))
        except (InvalidValue, ValueError, TypeError) as exc:
            problems.append(exc)
    if problems:
        raise ClassValidationError(f"while structuring {cls.__name__}", problems, cls)
    return instance


converter = make_converter()


def _field_names(cls: type) -> list[str]:
    return [a.alias or a.name for a in attrs.fields(cls)] if attrs.has(cls) else []


def _messages(exc: BaseException, path: str) -> Iterator[str]:
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without_notes = exc.group_exceptions()
        for sub, note in with_notes:
            if hasattr(note, "name"):
                yield from _messages(sub, f"{path}.{note.name}")
            else:
                yield from _messages(sub, f"{path}[{note.index}]")
        for sub in without_notes:
            yield from _messages(sub, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        valid = _field_names(exc.cl)
        for key in sorted(exc.extra_fields):
            hint = difflib.get_close_matches(key, valid, n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
            known = f"valid keys: {', '.join(valid)}" if valid else "it takes no parameters"
            yield f"{path}.{key}: unknown key{suggestion} ({known})"
    elif isinstance(exc, InvalidValue):
        yield f"{path}.{exc.name}: {exc.message}"
    elif isinstance(exc, KeyError):
        yield f"{path}: required key is missing"
    elif isinstance(exc, ConfigError):
        yield str(exc)
    else:
        yield f"{path}: {exc}"


def error_messages(exc: BaseException, path: str = "$") -> list[str]:
    """One message per problem in a (possibly nested) cattrs structuring error."""
    return list(_messages(exc, path))


def structure(data: Any, cls: type[T], path: str = "$") -> T:
    """Structure ``data`` into ``cls``; raise one ConfigError listing every problem."""
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError, ValueError, TypeError) as exc:
        raise ConfigError("\n".join(error_messages(exc, path))) from exc


def positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: the value is > 0."""
    if value is not None and value <= 0:
        raise InvalidValue(attribute.name, f"must be positive, got {value!r}")


def non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: the value is >= 0."""
    if value is not None and value < 0:
        raise InvalidValue(attribute.name, f"must be zero or positive, got {value!r}")


def below_one(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: 0 <= value < 1 (decay rates)."""
    if not 0 <= value < 1:
        raise InvalidValue(attribute.name, f"must be in [0, 1), got {value!r}")


def params_class(factory: Callable[..., Any], exclude: tuple[str, ...] = ()) -> type | None:
    """An attrs class mirroring the keyword parameters of ``factory`` (its type hints, its
    defaults), so a TOML table can be checked against any callable before calling it.

    Returns ``None`` when the factory takes ``**kwargs`` (its keys cannot be checked).
    """
    signature = inspect.signature(factory)
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: check names and presence only
        hints = {}
    fields: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if param.kind is param.VAR_KEYWORD:
            return None
        if param.kind is param.VAR_POSITIONAL or name in exclude:
            continue
        default = attrs.NOTHING if param.default is param.empty else param.default
        fields[name] = attrs.field(type=hints.get(name, Any), default=default)
    name = getattr(factory, "__name__", "")
    name = f"{name if name.isidentifier() else 'Factory'}Params"  # a lambda's is <lambda>
    return attrs.make_class(name, fields, kw_only=True, frozen=True)
