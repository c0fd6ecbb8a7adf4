"""The one error class of generation."""

from __future__ import annotations

from v2a.errors import UserError


class GenerationError(UserError):
    """A video or an option that ``v2a generate`` cannot use (one sentence)."""
