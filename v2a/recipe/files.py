"""Recipe files: YAML read with the safe loader and within limits, recipes found by path or by
the name of a shipped one, and the catalogue of shipped recipes.

A file or override larger or deeper than the limits (:data:`MAX_BYTES`, :data:`MAX_VALUES`
with YAML aliases counted, :data:`MAX_DEPTH`) is refused before anything expands it.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from v2a.errors import RecipeError, suggestion

# ---------------------------------------------------------------------------------------------
# Limits on what a recipe file (or an override) may hold
# ---------------------------------------------------------------------------------------------

#: Bytes of one recipe or component file (and characters of one override or resolved string).
MAX_BYTES = 256 * 1024
#: Values (every scalar, list and mapping, YAML aliases counted as often as they are used) of
#: one file, of a whole composed recipe, and of one resolved slot or section.
MAX_VALUES = 10_000
#: Nesting of mappings and lists, and of ``extends``.
MAX_DEPTH = 32
#: Setting this environment variable to 1 allows ``${oc.env:...}`` (as ``--allow-env`` does).
ALLOW_ENV_VARIABLE = "V2A_RECIPE_ALLOW_ENV"
#: The recipe of a model folder (what ``v2a export`` writes beside the weights).
MODEL_RECIPE = "recipe.yaml"


# ---------------------------------------------------------------------------------------------
# Finding and reading files
# ---------------------------------------------------------------------------------------------


class YAMLLimitError(yaml.YAMLError):
    """Parsed YAML would pass a limit of this module; ``problem`` is the clause that says which,
    to follow the name of the file (or override)."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with two changes.

    * It reads ``1e-3`` as a float as YAML 1.2 does (YAML 1.1 wants a dot, ``1.0e-3``, and would
      hand ``lr: 1e-3`` to the schema as a string).
    * It counts the values of the document as the node graph is composed, an alias counted as
      often as it is used but never expanded, and refuses (:class:`YAMLLimitError`) more than
      :data:`MAX_VALUES` values or more than :data:`MAX_DEPTH` levels of nesting: an alias
      bomb or deep nesting is refused while it is read, before anything expands or recurses.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values in it, its depth)
        self.values = 0  # of the largest node so far: in the end, of the document

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YAMLLimitError(too_deep())
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        measured = self._measured.get(id(node))
        if measured is None:
            if alias:  # an alias to a collection that is still being composed: to itself
                raise YAMLLimitError("holds a YAML alias inside the mapping or list it names; "
                                     "a recipe cannot contain itself")
            if isinstance(node, yaml.ScalarNode):
                children = []
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            else:
                children = [n for pair in node.value for n in pair]
            inner = [self._measured[id(child)] for child in children]
            measured = (1 + sum(v for v, _ in inner), 1 + max((d for _, d in inner), default=0))
            self._measured[id(node)] = measured
        values, depth = measured
        if values > MAX_VALUES:
            raise YAMLLimitError(f"expands to more than {MAX_VALUES} values (YAML aliases?); "
                                 f"recipes are limited to {MAX_VALUES}")
        if self._depth + depth > MAX_DEPTH:
            raise YAMLLimitError(too_deep())
        self.values = max(self.values, values)
        return node


def too_deep() -> str:
    """The clause of an error about nesting deeper than :data:`MAX_DEPTH` (after the name of the
    file or override)."""
    return (f"nests mappings and lists more than {MAX_DEPTH} levels deep; recipes are limited "
            f"to {MAX_DEPTH}")


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse recipe YAML: safe (no Python objects), numbers as YAML 1.2 reads them, and within
    the limits (:class:`YAMLLimitError`: at most :data:`MAX_BYTES`, :data:`MAX_VALUES` values
    and :data:`MAX_DEPTH` levels)."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise YAMLLimitError(f"is larger than {MAX_BYTES // 1024} KiB; recipes are limited to "
                             f"{MAX_BYTES // 1024} KiB")
    loader = RecipeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def builtin_recipes_dir() -> Path:
    """Folder of the recipes shipped with v2a (``recipes/`` in the source tree)."""
    return Path(str(importlib.resources.files("v2a_recipes")))


def shipped_recipes() -> dict[str, Path]:
    """The shipped recipes by name: the path below :func:`builtin_recipes_dir` without
    ``.yaml`` (``tiny``, ``small/maskvat_hybrid_small``); ``components/`` holds component
    files, and a model folder (one holding a :data:`MODEL_RECIPE`, such as ``tiny/``) the
    recipe of its model, not recipes of the catalogue."""
    root = builtin_recipes_dir()
    found = {}
    for path in sorted(root.rglob("*.yaml")):
        parts = path.relative_to(root).with_suffix("").parts
        model_folder = path.parent != root and (path.parent / MODEL_RECIPE).is_file()
        if "components" not in parts and not model_folder:
            found["/".join(parts)] = path
    return found


def builtin_recipe_names() -> list[str]:
    return list(shipped_recipes())


def display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def locate(ref: str | Path, relative_to: Path | None = None) -> Path:
    """A recipe file from a path, from the name of a shipped recipe (``tiny``,
    ``small/maskvat_small``) or from the file name of one, when only one has it
    (``maskvat_hybrid_small``)."""
    ref = str(ref)
    candidates = []
    if relative_to is not None:
        candidates.append(relative_to / ref)
    candidates.append(Path(ref))
    builtin = builtin_recipes_dir()
    candidates += [builtin / ref, builtin / f"{ref}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shipped = shipped_recipes()
    if not re.search(r"[/\\]", ref):
        stem = re.sub(r"\.ya?ml$", "", ref)
        named = [name for name, path in shipped.items() if path.stem == stem]
        if len(named) == 1:
            return shipped[named[0]]
        if named:
            listed = " and ".join(display(shipped[n]) for n in named)
            raise RecipeError(f"recipe name {ref!r} is ambiguous: {listed} both have it; give "
                              "the path of the one you mean")
    where = f" (looked beside {display(relative_to)})" if relative_to is not None else ""
    choices = [*shipped, *(p.stem for p in shipped.values())]
    raise RecipeError(
        f"recipe file {ref!r} does not exist{where}; "
        f"{suggestion(Path(ref).stem, choices, 'built-in recipes')}"
    )


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a recipe (or component) file holds, within the limits of :func:`load_yaml`."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise RecipeError(f"{display(path)} is larger than {MAX_BYTES // 1024} KiB; recipes "
                              f"are limited to {MAX_BYTES // 1024} KiB")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {display(path)}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{display(path)} is not UTF-8 text") from None
    try:
        data = load_yaml(text)
    except YAMLLimitError as exc:
        raise RecipeError(f"{display(path)} {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise RecipeError(f"{display(path)} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{display(path)} must hold a mapping of keys, not {type(data).__name__}")
    return data


@dataclass(frozen=True)
class CatalogueEntry:
    """A shipped recipe as ``v2a recipe list`` shows it."""

    name: str
    path: Path
    description: str
    base: bool


def catalogue() -> list[CatalogueEntry]:
    """Every shipped recipe with its own description and ``base`` flag (read from its file
    alone: neither is inherited)."""
    entries = []
    for name, path in shipped_recipes().items():
        try:
            data = read_yaml(path)
            description, base = str(data.get("description") or ""), data.get("base") is True
        except RecipeError as exc:
            description, base = f"(cannot be read: {exc})", False
        entries.append(CatalogueEntry(name=name, path=path, description=description, base=base))
    return entries


def recipes_extending(path: Path) -> list[str]:
    """The recipes that name ``path`` in their ``extends`` (shipped ones by name, others in
    ``path``'s folder by file), for a hint."""
    target = path.resolve()
    shipped = shipped_recipes()
    stems = [p.stem for p in shipped.values()]
    names = {p.resolve(): p.stem if stems.count(p.stem) == 1 else name
             for name, p in shipped.items()}
    found = []
    for candidate in sorted({*shipped.values(), *path.parent.glob("*.yaml")}):
        try:
            bases = read_yaml(candidate).get("extends") or []
            bases = [bases] if isinstance(bases, str) else list(bases)
            if any(locate(b, candidate.parent).resolve() == target
                   for b in bases if isinstance(b, str)):
                found.append(names.get(candidate.resolve(), display(candidate)))
        except RecipeError:
            continue
    return sorted(set(found))
