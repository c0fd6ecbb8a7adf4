"""Errors a user can cause.

Every exception derived from :class:`UserError` is caught by the CLI, printed as one sentence
and turned into a non-zero exit status (2 for a bad recipe or command line, 1 otherwise), with no
traceback unless ``--verbose`` is given. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import errno
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


#: What the user's machine or files cause (permissions, full or read-only disks, missing paths):
#: an OSError with one of these errors is reported in one sentence; any other keeps its traceback.
USER_ERRNOS = {
    errno.EACCES: "check the permissions",
    errno.EPERM: "check the permissions",
    errno.EROFS: "write somewhere else",
    errno.ENOSPC: "free some space or write somewhere else",
    errno.EDQUOT: "free some space or write somewhere else",
    errno.EFBIG: "write somewhere else",
    errno.ENOENT: "",
    errno.ENOTDIR: "",
    errno.EISDIR: "",
    errno.EEXIST: "",
    errno.ENOTEMPTY: "",
    errno.ENAMETOOLONG: "use a shorter name",
    errno.EIO: "the disk or file system reported an input/output error",
}


def user_facing_message(exc: BaseException) -> str | None:
    """One sentence for an exception the user's environment caused rather than a bug in v2a: an
    OSError with an errno of :data:`USER_ERRNOS` (PyAV's file errors included), a PyAV error
    about a named file, running out of memory. None for anything else (a bug: keep the traceback)."""
    if isinstance(exc, MemoryError):
        return ("the machine ran out of memory; try a shorter video or window, a smaller batch, "
                "or a smaller recipe")
    filename = getattr(exc, "filename", None)
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        what = f"{filename}: " if filename else ""
        reason = (exc.strerror or str(exc)).rstrip(".")
        hint = USER_ERRNOS[exc.errno]
        return f"{what}{reason[:1].lower()}{reason[1:]}" + (f"; {hint}" if hint else "")
    if type(exc).__module__ == "av.error" and filename:
        reason = getattr(exc, "strerror", None) or str(exc)
        return f"PyAV (FFmpeg) could not process {filename}: {reason}"
    return None
