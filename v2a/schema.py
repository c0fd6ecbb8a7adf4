"""Validation of plain data (parsed YAML) against dataclass schemas.

A schema is a dataclass whose field types say what a recipe may write: ``int``, ``float`` (an int
is accepted), ``bool``, ``str``, ``X | None``, ``Literal[...]`` (a set of choices), ``list[X]``,
``tuple[X, ...]``, ``dict[str, X]``, ``Any`` and nested dataclasses. :func:`validate` checks a
mapping against it and builds the dataclass instance, or raises :class:`SchemaError` naming the
dotted key and, for a misspelt key or choice, the closest valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal, Union

from v2a.errors import suggestion


class SchemaError(Exception):
    """``key`` (dotted path) does not fit the schema; ``message`` says how, in one clause."""

    def __init__(self, key: str, message: str, *, whole: bool = False):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message
        self.whole = whole  # about the mapping at ``key`` as a whole (its own __post_init__ check)


@lru_cache(maxsize=None)
def fields_of(schema: type) -> dict[str, tuple[Any, dataclasses.Field]]:
    """``{name: (resolved type, field)}`` of a dataclass, string annotations resolved."""
    hints = typing.get_type_hints(schema)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(schema) if f.init}


def describe(tp: Any) -> str:
    """A short human name for a type annotation (``int``, ``list of float``, ``one of a, b``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "anything"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple) or tp in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return "a list" + (f" of {describe(inner[0])}" if len(set(inner)) == 1 else "")
    if origin in (dict, Mapping) or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _typename(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def join(key: str, sub: str | int) -> str:
    if isinstance(sub, int):
        return f"{key}[{sub}]"
    return f"{key}.{sub}" if key else sub


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against (and, for dataclasses and tuples, converted to) ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except SchemaError as exc:
                errors.append(exc)
        deeper = [e for e in errors if e.key != key]
        if len(deeper) == 1:  # the value fits one option's shape but fails inside it
            raise deeper[0]
        raise SchemaError(key, f"expected {describe(tp)}, got {_typename(value)}")
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(a is value for a in args)):
            return value
        hint = suggestion(str(value), [str(a) for a in args]) if isinstance(value, str) else ""
        raise SchemaError(
            key, f"expected {describe(tp)}, got {_typename(value)}" + (f"; {hint}" if hint else "")
        )
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise SchemaError(key, f"expected a mapping, got {_typename(value)}")
        return validate(value, tp, key)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SchemaError(key, f"expected {describe(tp)}, got {_typename(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise SchemaError(key, f"expected a list of {len(args)} items, got {len(value)}")
            return tuple(coerce(v, a, join(key, i)) for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [coerce(v, inner, join(key, i)) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise SchemaError(key, f"expected a mapping, got {_typename(value)}")
        inner = args[1] if len(args) == 2 else Any
        return {str(k): coerce(v, inner, join(key, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"schema type {tp!r} at {key!r} is not supported by v2a.schema")
    raise SchemaError(key, f"expected {describe(tp)}, got {_typename(value)}")


def validate(data: Mapping[str, Any], schema: type, key: str = "") -> Any:
    """Check ``data`` against the dataclass ``schema`` and return the built instance."""
    known = fields_of(schema)
    for name in data:
        if name not in known:
            raise SchemaError(
                join(key, str(name)),
                f"unknown key; {suggestion(str(name), known, 'keys')}",
            )
    kwargs = {}
    for name, (tp, field) in known.items():
        if name in data:
            kwargs[name] = coerce(data[name], tp, join(key, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SchemaError(join(key, name), f"is required ({describe(tp)})")
    try:
        return schema(**kwargs)
    except (ValueError, TypeError) as exc:  # the dataclass's own __post_init__ checks
        raise SchemaError(key, str(exc), whole=True) from None


def defaults(schema: type) -> dict[str, Any]:
    """The schema's defaults as plain data (what ``v2a recipe show`` prints)."""
    return to_data(schema()) if all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for _, f in fields_of(schema).values()
    ) else {}


def to_data(instance: Any) -> Any:
    """A dataclass instance as plain lists/dicts/scalars."""
    if dataclasses.is_dataclass(instance):
        return {f.name: to_data(getattr(instance, f.name)) for f in dataclasses.fields(instance)}
    if isinstance(instance, (list, tuple)):
        return [to_data(v) for v in instance]
    if isinstance(instance, Mapping):
        return {k: to_data(v) for k, v in instance.items()}
    return instance
