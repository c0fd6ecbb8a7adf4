"""Arguments shared by the sub-commands."""

from __future__ import annotations

import argparse


def add_recipe_arguments(p: argparse.ArgumentParser, overrides_help: str = "recipe overrides") -> None:
    """The ``RECIPE [key=value ...]`` arguments every command that reads a recipe takes."""
    p.add_argument("recipe", help="a recipe file, or the name of a built-in recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value|~key",
                   help=overrides_help + " (~key removes a key)")
