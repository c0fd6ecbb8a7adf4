"""A recipe file, the files it extends and the command line's overrides, composed into one
mapping of plain data, with the source (file or override) of every key remembered for errors.

Files named by ``extends`` are merged in order, then the file itself; a component slot merges
key by key unless the newer layer names a different ``plugin``, in which case the slot is
replaced (options of one plug-in never leak into another). ``key=value`` overrides are applied
last, with the same rules; ``~key`` removes a key.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from v2a.errors import RecipeError
from v2a.interpolation import count_values
from v2a.recipe.config import COMMAND_LINE, MULTI_SLOTS, OWN_KEYS, SLOTS
from v2a.recipe.files import (
    MAX_DEPTH,
    MAX_VALUES,
    YAMLLimitError,
    display,
    load_yaml,
    locate,
    read_yaml,
    too_deep,
)


def slot_kind(path: str) -> str | None:
    """The plug-in kind of a component slot path (``codec``, ``visual_encoders.clip``)."""
    if path in SLOTS:
        return SLOTS[path]
    head, _, tail = path.partition(".")
    if head in MULTI_SLOTS and tail and "." not in tail:
        return MULTI_SLOTS[head]
    return None


def resolve_relative_weights(data: Any, base_dir: Path) -> Any:
    """``data`` with every ``weights`` value that starts with ``./`` or ``../`` made absolute
    against ``base_dir`` (the folder of the file that sets it), at any depth, so that a recipe
    can ship with its weights files; other values are left as they are."""
    if isinstance(data, Mapping):
        return {
            k: str((base_dir / v).resolve())
            if k == "weights" and isinstance(v, str) and v.startswith(("./", "../"))
            else resolve_relative_weights(v, base_dir)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [resolve_relative_weights(v, base_dir) for v in data]
    return data


def is_override(arg: str) -> bool:
    """Whether a command-line argument is a recipe override (``key=value`` or ``~key``) rather
    than a file that happens to hold such characters (an existing path is always a file)."""
    return ("=" in arg or arg.startswith("~")) and not arg.startswith("-") and not Path(arg).exists()


def override_source(text: str) -> str:
    """How errors name a ``key=value`` override (long ones shortened)."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    return f"{COMMAND_LINE} ({shown})"


class Composer:
    """Merges recipe layers into plain data, remembering the source of every key."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sources: dict[str, str] = {}  # dotted key -> the file (or override) that set it
        self._children: dict[str, set[str]] = {}  # dotted key -> the keys of sources below it
        self.values = 0  # read so far, over every file and override: at most MAX_VALUES

    def source_of(self, path: str, *, latest_below: bool = False) -> str:
        """Who set ``path`` (or its closest parent); with ``latest_below``, whoever set a key at
        or below ``path`` last (for errors about a mapping as a whole)."""
        if latest_below:
            below = [k for k in self.sources if k == path or k.startswith(path + ".")]
            if below:  # dicts keep insertion order and _mark re-inserts: the last is the latest
                return self.sources[below[-1]]
        while path:
            if path in self.sources:
                return self.sources[path]
            item = re.fullmatch(r"(.+)\[\d+\]", path)  # a list item: whoever set the list
            path = item.group(1) if item else path.rpartition(".")[0]
        return self.sources.get("", "recipe")

    def _mark(self, path: str, value: Any, source: str, parent: str = "") -> None:
        """Record ``source`` as the setter of ``path`` (a key of the mapping at ``parent``) and
        of everything in ``value``, forgetting who set what was there before."""
        self._forget(path)
        self.sources[path] = source
        self._children.setdefault(parent, set()).add(path)
        if isinstance(value, Mapping):
            for k, v in value.items():
                self._mark(f"{path}.{k}", v, source, path)

    def _forget(self, path: str) -> None:
        for child in self._children.pop(path, ()):
            self._forget(child)
        self.sources.pop(path, None)

    def _spend(self, data: Any, source: str) -> None:
        """Count ``data`` (one file or override; at least one value) against the recipe's
        :data:`MAX_VALUES`."""
        self.values += max(1, count_values(data))
        if self.values > MAX_VALUES:
            top = self.sources.get("", "the recipe")
            raise RecipeError(f"{top}: with the files and overrides it takes in ({source} last), "
                              f"the recipe holds more than {MAX_VALUES} values; recipes are "
                              f"limited to {MAX_VALUES}")

    def component(self, value: Any, path: str, source: str, base_dir: Path | None) -> Any:
        """A slot value: a mapping as is; a string names a plug-in or a component YAML file."""
        if not isinstance(value, str):
            return value
        if value.endswith((".yaml", ".yml")):
            file = locate(value, base_dir)
            data = read_yaml(file)
            self._spend(data, display(file))
            if "plugin" not in data:
                raise RecipeError(f"{display(file)} (used for {path}) has no 'plugin' key")
            return resolve_relative_weights(data, file.parent)
        return {"plugin": value}

    def merge(self, dst: dict, src: Mapping, source: str, base_dir: Path | None, prefix: str = "") -> None:
        for key, value in src.items():
            key = str(key)
            path = f"{prefix}.{key}" if prefix else key
            kind = slot_kind(path)
            named = kind is not None and isinstance(value, str)  # a name or file: whole slot
            if kind is not None:
                value = self.component(value, path, source, base_dir)
            if prefix in MULTI_SLOTS and value is None:
                dst.pop(key, None)  # `visual_encoders.s3d: null` drops the stream
                self._mark(path, None, source, prefix)
                continue
            old = dst.get(key)
            swap = named or (
                kind is not None and isinstance(old, Mapping) and isinstance(value, Mapping)
                and "plugin" in value and value.get("plugin") != old.get("plugin")
            )
            if isinstance(value, Mapping) and not swap:
                if not isinstance(old, dict):  # a new mapping: built key by key, so that
                    dst[key] = {}  # slots inside it are resolved like everywhere else
                    self._mark(path, {}, source, prefix)
                self.merge(dst[key], value, source, base_dir, path)
            else:
                dst[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
                self._mark(path, value, source, prefix)

    def add_file(self, path: Path, chain: tuple[Path, ...] = ()) -> None:
        resolved = path.resolve()
        if resolved in chain:
            cycle = " -> ".join(display(p) for p in (*chain, resolved))
            raise RecipeError(f"recipes extend each other in a cycle: {cycle}")
        if len(chain) >= MAX_DEPTH:
            raise RecipeError(f"{display(chain[0])} extends recipes more than {MAX_DEPTH} levels "
                              f"deep; recipes are limited to {MAX_DEPTH}")
        data = read_yaml(path)
        self._spend(data, display(path))
        if chain:  # a recipe's name, description and base flag are its own, never inherited
            for key in OWN_KEYS:
                data.pop(key, None)
        bases = data.pop("extends", None) or []
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise RecipeError(f"{display(path)}: extends must be a file name or a list of them")
        for base in bases:
            self.add_file(locate(base, path.parent), (*chain, resolved))
        self.merge(self.data, resolve_relative_weights(data, path.parent), display(path), path.parent)

    def add_override(self, text: str) -> None:
        if text.startswith("~"):
            return self.remove(text[1:].strip(), override_source(text))
        key, sep, raw = text.partition("=")
        key = key.strip()
        source = override_source(text)
        if not sep or not key:
            raise RecipeError(f"override {text[:80]!r} is not of the form key=value")
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except YAMLLimitError as exc:
            raise RecipeError(f"{source}: the value {exc.problem}") from None
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        if len(parts) > MAX_DEPTH:
            raise RecipeError(f"{source}: the key {too_deep()}")
        self._spend(value, source)
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        # Walk down existing mappings so the override merges, rather than replaces, a section.
        self.merge(self.data, {parts[0]: nested}, source, Path.cwd())

    def remove(self, key: str, source: str) -> None:
        """``~key``: take ``key`` out of its mapping (a stream out of ``fuser.streams``, an option
        back to its default), as if no layer had set it."""
        parts = key.split(".")
        node: Any = self.data
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not key or "=" in key or not isinstance(node, dict) or parts[-1] not in node:
            raise RecipeError(f"{source}: ~{key} removes a key, but the recipe has no {key!r}"
                              if key and "=" not in key else
                              f"{source}: ~KEY takes a dotted key and no value, e.g. ~fuser.streams.s3d")
        del node[parts[-1]]
        self._mark(key, None, source, ".".join(parts[:-1]))
