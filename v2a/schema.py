"""Validation of plain data (parsed YAML) against dataclass schemas.

A schema is a dataclass whose field types say what a recipe may write: ``int``, ``float`` (an int
is accepted), ``bool``, ``str``, ``X | None``, ``Literal[...]`` (a set of choices), ``list[X]``,
``tuple[X, ...]``, ``dict[str, X]``, ``Any`` and nested dataclasses. :func:`validate` checks a
mapping against it and builds the dataclass instance, or raises :class:`SchemaError` naming the
dotted key and, for a misspelt key or choice, the closest valid ones.

A field may also declare the numbers it accepts (:func:`bounded`: ``steps: int = bounded(10,
low=1)``), checked item by item for a list, and a dataclass's ``__post_init__`` may raise
:class:`FieldError` to blame one field; both are reported at the field's own key
(``sampling.steps[0]: must be at least 1, got 0``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
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


class FieldError(ValueError):
    """Raised by a schema's ``__post_init__`` about one field (``name``, or ``name[i]`` for a
    list item): :func:`validate` reports ``message`` at that field's key."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


#: Metadata key of a field's :class:`Bounds`.
BOUNDS = "v2a_bounds"


@dataclass(frozen=True)
class Bounds:
    """The numbers a field accepts: from ``low`` to ``high`` (``None``: unbounded on that side),
    each end included unless ``low_open`` / ``high_open``. A ``None`` value is not checked (the
    type says whether it is allowed); a list or tuple is checked item by item and, with
    ``non_empty``, must hold at least one."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    non_empty: bool = False

    def rule(self) -> str:
        """The bounds in words: ``must be at least 1``, ``must lie in [0, 1)``."""
        low, high = self.low, self.high
        if low is not None and high is not None:
            return (f"must lie in {'(' if self.low_open else '['}{low:g}, "
                    f"{high:g}{')' if self.high_open else ']'}")
        if low is not None:
            if low == 0:
                return "must be positive" if self.low_open else "must not be negative"
            return f"must be greater than {low:g}" if self.low_open else f"must be at least {low:g}"
        if high is not None:
            return f"must be less than {high:g}" if self.high_open else f"must be at most {high:g}"
        return "may be any number"

    def short(self) -> str:
        """The bounds in symbols, as the recipes reference writes them: ``≥ 1``, ``[0, 1)``,
        ``each ≥ 1, at least one``."""
        low, high = self.low, self.high
        if low is not None and high is not None:
            text = (f"{'(' if self.low_open else '['}{low:g}, {high:g}"
                    f"{')' if self.high_open else ']'}")
        elif low is not None:
            text = f"{'>' if self.low_open else '≥'} {low:g}"
        elif high is not None:
            text = f"{'<' if self.high_open else '≤'} {high:g}"
        else:
            text = "any"
        return f"each {text}, at least one" if self.non_empty else text

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (a number) is out of bounds, or None when it is within them."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        too_low = self.low is not None and (
            value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (
            value >= self.high if self.high_open else value > self.high)
        return f"{self.rule()}, got {value}" if too_low or too_high else None


def bounded(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            **bounds: Any) -> Any:
    """A dataclass field that accepts only the numbers :class:`Bounds` ``(**bounds)`` allows:
    ``lr: float = bounded(1e-4, low=0, low_open=True)``."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={BOUNDS: Bounds(**bounds)})


def check_bounds(instance: Any) -> None:
    """Raise :class:`FieldError` for the first field of a dataclass instance outside its
    :func:`bounded` limits (for a ``__post_init__``: the checks then hold outside recipes too)."""
    for f in dataclasses.fields(instance):
        bounds = f.metadata.get(BOUNDS)
        if bounds is None:
            continue
        value = getattr(instance, f.name)
        if isinstance(value, (list, tuple)):
            if bounds.non_empty and not value:
                raise FieldError(f.name, "must not be empty")
            for i, item in enumerate(value):
                if (problem := bounds.problem(item)) is not None:
                    raise FieldError(f"{f.name}[{i}]", problem)
        elif (problem := bounds.problem(value)) is not None:
            raise FieldError(f.name, problem)


@lru_cache(maxsize=None)
def fields_of(schema: type) -> dict[str, tuple[Any, dataclasses.Field]]:
    """``{name: (resolved type, field)}`` of a dataclass, string annotations resolved."""
    hints = typing.get_type_hints(schema)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(schema) if f.init}


def describe(tp: Any) -> str:
    """A type annotation in the vocabulary recipes are written in, the one error messages,
    ``v2a plugins`` and the docs use: ``int | null``, ``list[float]``, ``mapping[str, int]``,
    ``44khz | 24khz`` (the values a choice allows, as YAML writes them)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(_yaml_scalar(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(describe(a) for a in args)
    if origin in (list, tuple) or tp in (list, tuple):
        inner = {describe(a) for a in args if a is not Ellipsis}
        return f"list[{inner.pop()}]" if len(inner) == 1 else "list"
    if origin in (dict, Mapping) or tp in (dict, Mapping) or dataclasses.is_dataclass(tp):
        return f"mapping[{describe(args[0])}, {describe(args[1])}]" if len(args) == 2 else "mapping"
    return getattr(tp, "__name__", str(tp))


def _yaml_scalar(value: Any) -> str:
    """A choice's value as a recipe writes it (``null``, ``true``, ``44khz``, ``0.5``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
        instance = schema(**kwargs)
        check_bounds(instance)
    except FieldError as exc:  # about one field: reported at its key
        raise SchemaError(f"{key}.{exc.name}" if key else exc.name, exc.message) from None
    except (ValueError, TypeError) as exc:  # the dataclass's own __post_init__ checks
        raise SchemaError(key, str(exc), whole=True) from None
    return instance


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
