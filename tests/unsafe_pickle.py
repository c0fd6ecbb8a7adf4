"""Objects whose unpickling runs code: what a checkpoint that must be refused contains."""

from __future__ import annotations

from pathlib import Path


class RunsCode:
    """Unpickling this calls ``print(message)``: the test checks nothing was printed."""

    def __init__(self, message: str = "this ran"):
        self.message = message

    def __reduce__(self):
        return (print, (self.message,))


class TouchesFile:
    """Unpickling this creates ``marker``: the test checks the file does not exist."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
