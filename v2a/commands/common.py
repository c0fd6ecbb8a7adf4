"""Arguments shared by the sub-commands."""

from __future__ import annotations

import argparse

RECIPE_HELP = ("a recipe file, a built-in recipe's name, a model folder (from v2a export) or "
               "hf://OWNER/NAME[@REVISION]")


def add_recipe_arguments(p: argparse.ArgumentParser, overrides_help: str = "recipe overrides") -> None:
    """The ``RECIPE [key=value ...]`` arguments every command that reads a recipe takes."""
    p.add_argument("recipe", help=RECIPE_HELP)
    p.add_argument("overrides", nargs="*", metavar="key=value|~key",
                   help=overrides_help + " (~key removes a key)")
