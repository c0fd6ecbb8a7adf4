"""Errors a user can cause.

Every exception derived from :class:`UserError` is caught by the CLI, printed as one sentence
and turned into a non-zero exit status (2 for a bad recipe or command line, 1 otherwise), with no
traceback unless ``--verbose`` is given. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Something the user can fix: a bad file, option, recipe or environment."""

    exit_code = 1


class RecipeError(UserError):
    """A recipe (or a ``key=value`` override) that does not validate."""

    exit_code = 2


class PluginError(UserError):
    """A plug-in that is unknown, ambiguous, broken or missing a dependency."""

    exit_code = 2


def closest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The valid choices nearest to a misspelt ``word``, best first."""
    choices = sorted(set(choices))
    found = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    if not found:
        found = [c for c in choices if word.lower() in c.lower() or c.lower() in word.lower()][:n]
    return found


def suggestion(word: str, choices: Iterable[str], what: str = "choices") -> str:
    """A clause for an error message: ``did you mean 'x'?`` or the list of valid choices."""
    choices = sorted(set(choices))
    near = closest(word, choices)
    if near:
        return "did you mean " + " or ".join(repr(c) for c in near) + "?"
    if not choices:
        return f"there are no valid {what}"
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"valid {what}: {shown}"
