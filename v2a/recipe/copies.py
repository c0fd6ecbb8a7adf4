"""A shipped recipe copied out to be edited (``v2a recipe cp``), and a recipe compared with
the one it extends (``v2a recipe show --diff``).

A copy holds the recipe and every file it pulls in (the recipes of its ``extends``, theirs, and
the component YAMLs its slots name), all in one folder, with the references between them
rewritten to the new file names, so the copy composes to exactly what the original does. The
copies are the original text, comments included: only a reference's value and a relative
``weights`` value change. A ``weights`` path starting ``./`` or ``../`` is made absolute, so
the copy keeps using the shipped weights files; nothing else is copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from v2a.errors import UserError
from v2a.recipe.compose import Composer, slot_kind
from v2a.recipe.config import MULTI_SLOTS, OWN_KEYS, SLOTS, Recipe
from v2a.recipe.files import display, locate, read_yaml
from v2a.recipe.saved import ABSENT, recipe_differences
from v2a.recipe.validation import validate_recipe
from v2a.registry import Registry


@dataclass
class PulledFile:
    """One file of a recipe's closure: where it is, and the references its text makes."""

    source: Path  # resolved
    references: dict[str, Path] = field(default_factory=dict)  # as written -> the file it names
    relative_weights: list[str] = field(default_factory=list)  # ``./`` or ``../`` values
    component: bool = False  # a component YAML (named by a slot), not a recipe


def _slot_files(data: Mapping[str, Any]) -> list[str]:
    """The component YAML files a recipe's slots name (``codec: components/codecs/dac.yaml``)."""
    named = [(slot, data.get(slot)) for slot in SLOTS]
    for multi in MULTI_SLOTS:
        streams = data.get(multi)
        if isinstance(streams, Mapping):
            named += [(f"{multi}.{name}", value) for name, value in streams.items()]
    return [value for slot, value in named if slot_kind(slot) and isinstance(value, str)
            and value.endswith((".yaml", ".yml"))]


def _relative_weights(data: Any) -> list[str]:
    """Every ``weights`` value at any depth that starts with ``./`` or ``../``."""
    if isinstance(data, Mapping):
        found = []
        for key, value in data.items():
            if key == "weights" and isinstance(value, str) and value.startswith(("./", "../")):
                found.append(value)
            else:
                found += _relative_weights(value)
        return found
    if isinstance(data, list):
        return [v for item in data for v in _relative_weights(item)]
    return []


def recipe_closure(path: Path) -> list[PulledFile]:
    """``path`` and every file it pulls in, ``path`` first, each once."""
    pulled: dict[Path, PulledFile] = {}

    def visit(file: Path, component: bool) -> None:
        file = file.resolve()
        if file in pulled:
            return
        data = read_yaml(file)
        entry = pulled[file] = PulledFile(source=file, relative_weights=_relative_weights(data),
                                          component=component)
        if component:  # a component file names no further files
            return
        bases = data.get("extends") or []
        for base in [bases] if isinstance(bases, str) else list(bases):
            entry.references[base] = locate(base, file.parent).resolve()
            visit(entry.references[base], component=False)
        for ref in _slot_files(data):
            entry.references[ref] = locate(ref, file.parent).resolve()
            visit(entry.references[ref], component=True)

    visit(path, component=False)
    return list(pulled.values())


def _new_names(closure: list[PulledFile], first_name: str) -> dict[Path, str]:
    """A distinct file name in the copy's folder for each file (the first is ``first_name``;
    a clash is told apart by the folder the file came from)."""
    names = {closure[0].source: first_name}
    for entry in closure[1:]:
        name = entry.source.name
        if name in names.values():
            name = f"{entry.source.parent.name}_{name}"
        while name in names.values():
            name = f"_{name}"
        names[entry.source] = name
    return names


def _reference_nodes(root: yaml.Node, *, component: bool) -> list[yaml.ScalarNode]:
    """Where a recipe's text names another file or a weights file: the scalars of its
    ``extends`` and of slots named by a string (not in a component file), and every
    ``weights`` value, at any depth."""
    found: list[yaml.ScalarNode] = []

    def weights(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == "weights" and isinstance(value, yaml.ScalarNode):
                    found.append(value)
                else:
                    weights(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                weights(item)

    if not isinstance(root, yaml.MappingNode):
        return found
    for key, value in [] if component else root.value:
        values = value.value if isinstance(value, (yaml.SequenceNode, yaml.MappingNode)) else [value]
        if key.value == "extends":
            found += [v for v in values if isinstance(v, yaml.ScalarNode)]
        elif key.value in SLOTS and isinstance(value, yaml.ScalarNode):
            found.append(value)
        elif key.value in MULTI_SLOTS and isinstance(value, yaml.MappingNode):
            found += [stream for _, stream in value.value if isinstance(stream, yaml.ScalarNode)]
    weights(root)
    return found


def _rewrite(text: str, replacements: dict[str, str], *, component: bool = False) -> str:
    """``text`` with each reference (:func:`_reference_nodes`) whose value is a key of
    ``replacements`` replaced by its value (in single quotes where the old one was quoted or
    the new one needs them); everything else, comments included, as it was."""
    nodes = [n for n in _reference_nodes(yaml.compose(text, Loader=yaml.SafeLoader),
                                         component=component) if n.value in replacements]
    for node in sorted(nodes, key=lambda n: n.start_mark.index, reverse=True):
        value = replacements[node.value]
        if node.style in ("'", '"') or yaml.safe_load(value) != value:  # quoted, or must be:
            value = "'" + value.replace("'", "''") + "'"  # single quotes have no escapes
        text = text[:node.start_mark.index] + value + text[node.end_mark.index:]
    return text


@dataclass
class CopiedRecipe:
    """What :func:`copy_recipe` wrote."""

    recipe: Path  # the copy of the recipe itself
    files: list[tuple[Path, Path]]  # (original, copy) of every file, the recipe first
    weights: list[tuple[str, str]]  # (relative weights value, the absolute path now written)


def copy_recipe(ref: str, dest: str | Path | None = None, *, force: bool = False) -> CopiedRecipe:
    """Copy the recipe ``ref`` (a shipped name or a path) and the files it pulls in to ``dest``
    (a file name, or a folder to copy into; default: the working folder, under the recipe's
    own file name). Refuses (:class:`UserError`) to overwrite a file unless ``force``."""
    source = locate(ref)
    target = Path(dest) if dest is not None else Path(source.name)
    if target.is_dir() or (dest is not None and str(dest).endswith(("/", "\\"))):
        target = target / source.name
    if target.suffix not in (".yaml", ".yml"):
        target = target.with_name(target.name + ".yaml")
    closure = recipe_closure(source)
    names = _new_names(closure, target.name)
    folder = target.parent
    copies = [(entry, folder / names[entry.source]) for entry in closure]
    if any(copy.resolve() == entry.source for entry, copy in copies):
        raise UserError(f"{display(source)} cannot be copied onto itself; give another destination")
    existing = [copy for _, copy in copies if copy.exists()]
    if existing and not force:
        listed = ", ".join(display(p) for p in existing)
        raise UserError(f"{listed} already exist{'s' if len(existing) == 1 else ''}; pass --force "
                        f"to overwrite, or give another destination")
    folder.mkdir(parents=True, exist_ok=True)
    weights = []
    for entry, copy in copies:
        replacements = {ref: names[file] for ref, file in entry.references.items()}
        for value in entry.relative_weights:
            replacements[value] = str((entry.source.parent / value).resolve())
            weights.append((value, replacements[value]))
        text = entry.source.read_text(encoding="utf-8")
        copy.write_text(_rewrite(text, replacements, component=entry.component),
                        encoding="utf-8")
    return CopiedRecipe(recipe=folder / names[closure[0].source],
                        files=[(entry.source, copy) for entry, copy in copies], weights=weights)


def composed(path: Path, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The plain data ``path`` composes to (its ``extends`` and component files merged in, then
    the ``overrides``), nothing resolved or validated."""
    composer = Composer()
    composer.sources[""] = display(path)
    composer.add_file(path)
    for text in overrides:
        composer.add_override(text)
    return composer.data


@dataclass
class ParentChanges:
    """What a recipe changes against what it extends (:func:`changes_against_parent`)."""

    bases: list[str]  # the recipe's ``extends``, as written
    changes: list[tuple[str, Any, Any]]  # (dotted key, parent's value, recipe's value)
    unresolved: str | None  # why the two were compared as composed, not resolved (else None)


def changes_against_parent(recipe: Recipe, registry: Registry, *, random_weights: bool = False,
                           allow_env: bool = False) -> ParentChanges | None:
    """Every key where ``recipe`` (loaded from a file) differs from what it extends: its
    ``extends`` files merged in order, as loading it does before its own keys, then both
    resolved with every default filled in. Where the parent alone does not validate (a base
    that another base completes), the two are compared as composed, before resolution. A
    recipe's own name, description and base flag are never inherited and are left out;
    :data:`ABSENT` marks a key one side lacks. None when the recipe extends nothing."""
    path = recipe.path
    bases = read_yaml(path).get("extends") or []
    bases = [bases] if isinstance(bases, str) else list(bases)
    if not bases:
        return None
    composer = Composer()
    source = f"what {display(path)} extends"
    composer.sources[""] = source
    for base in bases:  # inside path's chain: the bases' own keys are not taken, as in loading
        composer.add_file(locate(base, path.parent), (path.resolve(),))
    try:
        parent = validate_recipe(composer, registry, source=source, default_name=path.stem,
                                 random_weights=random_weights, allow_env=allow_env)
    except UserError as exc:
        changes = _changes(composer.data, composed(path, recipe.overrides))
        return ParentChanges(bases=bases, changes=changes, unresolved=str(exc))
    return ParentChanges(bases=bases, changes=_changes(parent.as_data(), recipe.as_data()),
                         unresolved=None)


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The differences of two recipes' data: a slot, stream or section that one side lacks as
    one change holding all of it, then key by key (:func:`recipe_differences`)."""
    old, new = dict(old), dict(new)
    whole = [(key, old.pop(key, ABSENT), new.pop(key, ABSENT))
             for key in sorted(old.keys() ^ new.keys()) if key not in OWN_KEYS]
    for multi in MULTI_SLOTS:
        a, b = old.get(multi), new.get(multi)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            old[multi], new[multi] = dict(a), dict(b)
            whole += [(f"{multi}.{name}", old[multi].pop(name, ABSENT), new[multi].pop(name, ABSENT))
                      for name in sorted(a.keys() ^ b.keys())]
    return whole + recipe_differences(old, new, ignore=OWN_KEYS)


__all__ = ["ABSENT", "CopiedRecipe", "ParentChanges", "changes_against_parent", "composed",
           "copy_recipe", "recipe_closure"]
