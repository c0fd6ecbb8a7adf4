"""A recipe compared with a saved one (the resolved ``recipe.yaml`` a training run keeps), key
by key: what changed since the run was trained."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from v2a.recipe.files import load_yaml


class _Absent:
    def __repr__(self) -> str:
        return "absent"


#: The value :func:`recipe_differences` gives a key that one side lacks (shown as ``absent``).
ABSENT: Any = _Absent()


def flat_keys(data: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"codec": {"n_codebooks": 4}}`` →
    ``{"codec.n_codebooks": 4}`` (lists and other values are leaves)."""
    out: dict[str, Any] = {}
    for key, value in (data or {}).items():
        if isinstance(value, Mapping):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def recipe_differences(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, *,
                       ignore: Sequence[str] = ()) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` wherever the recipe data ``old`` and ``new``
    (:meth:`Recipe.as_data`, or a saved copy of it) differ, keys in ``ignore`` left out: the
    ``plugin`` keys first (a swapped plug-in explains its other keys), then in key order. A key
    one side lacks has the value :data:`ABSENT` there."""
    a, b = flat_keys(old), flat_keys(new)
    differ = [k for k in a.keys() | b.keys()
              if a.get(k, ABSENT) != b.get(k, ABSENT) and k not in ignore]
    differ.sort(key=lambda k: (k.rpartition(".")[2] != "plugin", k))
    return [(k, a.get(k, ABSENT), b.get(k, ABSENT)) for k in differ]


def read_saved_recipe(path: str | Path) -> dict[str, Any] | None:
    """The data of a saved resolved recipe (what :meth:`Recipe.to_yaml` wrote), or None when the
    file is missing or unreadable. It is compared, not loaded: nothing is validated or built."""
    try:
        data = load_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None
