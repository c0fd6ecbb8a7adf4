"""v2a's one logger (``logging.getLogger("v2a")``) and its one message format.

Everything v2a tells a user beside its results goes through here: :func:`warn` for what may be
wrong (a resource that looks short, a limiter that had to act, a plug-in that failed to load),
:func:`note` for what they should know (a stream re-encoded, an option that has no effect).
The command line shows both on stderr as::

    v2a: warning: <one sentence>
    v2a: note: <one sentence>

(:func:`show_on_stderr`, which :func:`v2a.cli.main` calls), written through ``tqdm.write`` so
that a progress bar on the terminal is not torn. Used as a library, v2a leaves logging to the
application: the messages reach its handlers as records of the ``v2a`` logger (warnings at
``WARNING``, notes at ``INFO``); with no handler configured, Python prints warnings and drops
notes.
"""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

logger = logging.getLogger("v2a")


def warn(message: str) -> None:
    """Tell the user something may be wrong (``v2a: warning: ...``)."""
    logger.warning(message)


def note(message: str) -> None:
    """Tell the user something they should know (``v2a: note: ...``)."""
    logger.info(message)


class MessageFormat(logging.Formatter):
    """``v2a: <warning|note|error>: <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        level = "note" if record.levelno < logging.WARNING else record.levelname.lower()
        return f"v2a: {level}: {record.getMessage()}"


class ProgressSafeHandler(logging.Handler):
    """Writes each message as a line of its own above any tqdm progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 (logging's contract: a failing handler reports, never raises)
            self.handleError(record)


def show_on_stderr() -> None:
    """Show the ``v2a`` logger's warnings and notes on stderr in :class:`MessageFormat` (once,
    however often it is called; the command line's set-up)."""
    if any(isinstance(h, ProgressSafeHandler) for h in logger.handlers):
        return
    handler = ProgressSafeHandler()
    handler.setFormatter(MessageFormat())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
