"""``v2a recipe show|check|list``: print a resolved recipe, validate one, list the built-in ones."""

from __future__ import annotations

import argparse

from v2a.commands.common import add_recipe_arguments
from v2a.errors import UserError
from v2a.log import note
from v2a.recipe import catalogue, load_recipe, recipe_options
from v2a.registry import default_registry
from v2a.tasks import task_spec
from v2a.weights import cached_file, parse_weights


def show(args: argparse.Namespace) -> int:
    options = recipe_options(args)
    recipe = load_recipe(args.recipe, args.overrides, **options)
    given = [*args.overrides, *(["--random-weights"] if options["random_weights"] else [])]
    print(f"# {recipe.source}" + (f" with {' '.join(given)}" if given else ""))
    print(recipe.to_yaml(), end="")
    return 0


def check(args: argparse.Namespace) -> int:
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
    """Register ``v2a recipe show|check|list`` on the CLI's sub-parsers."""
    recipe = sub.add_parser("recipe", parents=[common], help="show, check or list recipes")
    rsub = recipe.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("show", show, "print the resolved recipe with every default filled in"),
        ("check", check, "validate a recipe without building anything"),
    ):
        p = rsub.add_parser(name, parents=[common], help=text, description=text)
        add_recipe_arguments(p)
        p.set_defaults(func=func)
    p = rsub.add_parser("list", parents=[common], help="list the built-in recipes")
    p.set_defaults(func=list_recipes)
