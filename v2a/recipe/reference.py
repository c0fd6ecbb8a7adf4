"""The reference of a config dataclass: each option's name, type, default and one-line help.

One vocabulary, the one a recipe is written in: a type reads ``int | null``, ``list[float]``,
``mapping[str, int]`` or ``44khz | 24khz`` (the values a choice allows), and a default is the
YAML a recipe would write (``null``, ``true``, ``[16, 8, 4]``, ``none``). ``v2a plugins KIND
NAME`` prints these rows, and docs/recipes.md's reference tables use the same words.

The help of an option is its *attribute docstring*: the string literal on the line after the
field, as Sphinx and editors read it::

    @dataclass
    class MyCodecConfig:
        n_codebooks: int = 4
        \"\"\"RVQ levels the codec encodes to.\"\"\"

It is read from the class's source with :mod:`ast` (nothing is imported or run); a class whose
source cannot be found (a build shipping only ``.pyc`` files) has options without help.
docs/writing-a-plugin.md says why this form was chosen over ``field(metadata=...)``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import Any, NamedTuple

import yaml

from v2a.registry import COMPONENT_FIELD
from v2a.schema import describe, fields_of, to_data

REQUIRED = "required"
"""What the default column says of an option that has none."""


class OptionDoc(NamedTuple):
    """One option of a config dataclass, in the recipe vocabulary."""

    name: str
    type: str  # e.g. ``int | null``
    default: str  # the YAML a recipe writes for it, or ``required``
    help: str | None  # the field's attribute docstring on one line; None when it has none


class _ValueDumper(yaml.SafeDumper):
    """Floats as Python writes them, with the exponent YAML reads as a float (``1.0e-5``)."""


def _represent_float(dumper: yaml.SafeDumper, value: float) -> yaml.Node:
    text = repr(value)
    if "e" in text and "n" not in text:  # not inf or nan, which SafeDumper writes as YAML does
        mantissa, exponent = text.split("e")
        mantissa += "" if "." in mantissa else ".0"
        text = f"{mantissa}e{'-' if exponent.startswith('-') else '+'}{int(exponent.lstrip('+-'))}"
    elif "n" in text:
        return yaml.SafeDumper.represent_float(dumper, value)
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


_ValueDumper.add_representer(float, _represent_float)


def yaml_value(value: Any) -> str:
    """``value`` written as a recipe writes it, on one line (``null``, ``true``, ``[1, 2]``,
    ``1.0e-5``)."""
    text = yaml.dump(to_data(value), Dumper=_ValueDumper, default_flow_style=True,
                     sort_keys=False, width=10**6)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def field_docs(schema: type) -> dict[str, str]:
    """``{field: help}`` of a dataclass and its dataclass bases: each field's attribute
    docstring, its whitespace joined onto one line (a subclass's wins)."""
    docs: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if dataclasses.is_dataclass(cls):
            docs.update(_class_attribute_docs(cls))
    return docs


def _class_attribute_docs(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):  # no source (built-in, .pyc only, made at run time)
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for statement, after in zip(body, body[1:]):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[statement.target.id] = " ".join(after.value.value.split())
    return docs


def dataclass_doc(schema: type) -> list[OptionDoc]:
    """The options of a config dataclass (or section schema), in field order."""
    docs = field_docs(schema)
    rows = []
    for name, (tp, f) in fields_of(schema).items():
        if f.default is not dataclasses.MISSING:
            default = yaml_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = yaml_value(f.default_factory())
        else:
            default = REQUIRED
        kind = f.metadata.get(COMPONENT_FIELD)
        shown = f"{kind} component" if kind else describe(tp)
        rows.append(OptionDoc(name=name, type=shown, default=default, help=docs.get(name)))
    return rows
