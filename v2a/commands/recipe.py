"""``v2a recipe show|check|list|cp``: print a resolved recipe (or what it changes against the
one it extends), validate one, list the built-in ones, copy one out to edit."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from v2a.commands.common import add_recipe_arguments
from v2a.errors import UserError
from v2a.log import note
from v2a.recipe import ABSENT, catalogue, display

if TYPE_CHECKING:
    from v2a.recipe import Recipe

# `v2a recipe list` reads YAML files only; show, check and cp load recipes, whose validation
# needs the plug-ins: those functions import what they use, so that --help loads no plug-in.
# Loading and checking a recipe imports no torch (tests/test_startup.py), except to compare a
# trained weights file with its model on the meta device.


def show(args: argparse.Namespace) -> int:
    from v2a.recipe import load_recipe, recipe_options  # deferred: the plug-ins' configs
    options = recipe_options(args)
    recipe = load_recipe(args.recipe, args.overrides, **options)
    if args.diff:
        return show_changes(recipe, options)
    given = [*args.overrides, *(["--random-weights"] if options["random_weights"] else [])]
    print(f"# {recipe.source}" + (f" with {' '.join(given)}" if given else ""))
    print(recipe.to_yaml(), end="")
    return 0


def show_changes(recipe: Recipe, options: dict) -> int:
    """``v2a recipe show --diff R``: each key R changes against what it extends."""
    from v2a.recipe.copies import changes_against_parent  # deferred: the registry
    from v2a.registry import default_registry  # deferred: the plug-ins
    found = changes_against_parent(recipe, default_registry(),
                                   random_weights=options["random_weights"],
                                   allow_env=bool(options["allow_env"]))
    if found is None:
        print(f"{recipe.source} extends no recipe: there is nothing to compare it with")
        return 0
    given = f" with {' '.join(recipe.overrides)}" if recipe.overrides else ""
    count = len(found.changes)
    print(f"# {recipe.source}{given} against what it extends ({', '.join(found.bases)}): "
          f"{count} key{'' if count == 1 else 's'} changed; parent -> recipe")
    if found.unresolved:
        print(f"# compared as written, defaults not filled in: the parent alone does not "
              f"validate ({found.unresolved})")
    for key, old, new in found.changes:
        print(f"{key}: {shown_value(old)} -> {shown_value(new)}")
    return 0


def shown_value(value: object) -> str:
    from v2a.recipe import yaml_value  # deferred: v2a.recipe.reference's registry
    return "absent" if value is ABSENT else yaml_value(value)


def copy(args: argparse.Namespace) -> int:
    """``v2a recipe cp NAME [DEST] [--force]``."""
    from v2a.recipe.copies import composed, copy_recipe  # deferred: the registry
    copied = copy_recipe(args.name, args.dest, force=args.force)
    source = copied.files[0][0]
    print(f"copied {args.name} ({display(source)}) to {display(copied.recipe)}")
    for original, file in copied.files[1:]:
        print(f"  with {display(file)} (from {display(original)}), which it pulls in")
    for value, absolute in copied.weights:
        print(f"  weights {value} -> {absolute} (the original's file, not copied)")
    if composed(copied.recipe) != composed(source):  # a bug in the rewriting, not the user's
        raise RuntimeError(f"the copy {copied.recipe} does not compose to what {source} does")
    print(f"edit it, then: v2a recipe check {display(copied.recipe)}")
    return 0


def check(args: argparse.Namespace) -> int:
    from v2a.recipe import load_recipe, recipe_options  # deferred: the plug-ins' configs
    from v2a.registry import default_registry  # deferred: the plug-ins
    from v2a.tasks import task_spec  # deferred: the registry's training tasks
    from v2a.weights import cached_file, parse_weights  # deferred: downloads, hub (not for --help)
    recipe = load_recipe(args.recipe, args.overrides, **recipe_options(args), check_weights=True)
    registry = default_registry()
    task_spec(recipe, registry)  # training.task names a registered training task
    for slot, choice in recipe.all_components():
        status = registry.get(choice.kind, choice.plugin).status
        if status != "ok":
            note(f"{slot} ({choice.plugin}) cannot be built here: {status}")
        weights = choice.options.get("weights")
        if isinstance(weights, str) and weights.lower() not in ("none", "pretrained"):
            try:
                here = cached_file(weights)
            except UserError as exc:
                note(f"{slot}.weights: {exc}")
                continue
            if here is None:
                where = ("is not downloaded yet (it is fetched on first use)"
                         if not parse_weights(weights).is_local else "does not exist yet")
                note(f"{slot}.weights names {weights}, which {where}")
    base = "; a base recipe, to be extended rather than run" if recipe.base else ""
    print(f"{recipe.source}: ok ({len(recipe.components)} components{base})")
    return 0


def list_recipes(args: argparse.Namespace) -> int:
    entries = catalogue()
    width = max((len(e.name) for e in entries), default=0)
    for entry in entries:
        tag = "[base] " if entry.base else ""
        print(f"{entry.name:{width}s}  {tag}{entry.description}".rstrip())
    if any(e.base for e in entries):
        print("[base]: meant to be extended by other recipes, not run")
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a recipe show|check|list|cp`` on the CLI's sub-parsers."""
    recipe = sub.add_parser("recipe", parents=[common], help="show, check, list or copy recipes")
    rsub = recipe.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("show", show, "print the resolved recipe with every default filled in"),
        ("check", check, "validate a recipe without building anything"),
    ):
        p = rsub.add_parser(name, parents=[common], help=text, description=text)
        add_recipe_arguments(p)
        p.set_defaults(func=func)
        if name == "show":
            p.add_argument("--diff", action="store_true",
                           help="print only the keys the recipe changes against what it extends")
    p = rsub.add_parser("list", parents=[common], help="list the built-in recipes")
    p.set_defaults(func=list_recipes)
    text = ("copy a recipe and the files it pulls in (extends, component YAMLs) to edit; "
            "relative weights keep pointing at the shipped files")
    p = rsub.add_parser("cp", parents=[common], help=text.partition(";")[0], description=text)
    p.add_argument("name", metavar="NAME", help="a built-in recipe (see `v2a recipe list`) or a file")
    p.add_argument("dest", metavar="DEST", nargs="?",
                   help="the copy's file name, or a folder (default: NAME's file name, here)")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.set_defaults(func=copy)
