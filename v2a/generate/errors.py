"""The one error class of generation, and the parser of the step counts a user types."""

from __future__ import annotations

from v2a.errors import UserError


class GenerationError(UserError):
    """A video or an option that ``v2a generate`` cannot use (one sentence)."""


def parse_steps(text: str | None, *, name: str = "--steps") -> list[int] | None:
    """``"12,4,2"`` as ``[12, 4, 2]`` (steps per codebook level); empty or None: None (the
    recipe's steps). Refused in one sentence, naming the option ``name``, unless positive
    integers separated by commas."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        steps = [int(part) for part in text.split(",")]
    except ValueError:
        raise GenerationError(f"{name} takes positive integers separated by commas (e.g. 12,4,2), "
                              f"not {text!r}") from None
    if min(steps) < 1:
        raise GenerationError(f"{name} takes positive integers, not {text!r}")
    return steps
