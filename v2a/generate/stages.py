"""Stage timing of generation: where :meth:`~v2a.generate.VideoToAudio.generate` and
:func:`~v2a.generate.write_outputs` spend their time (``benchmarks/bench_pipeline.py``).

The pipeline marks its stages with ``with stage("sampling"): ...``. Nothing is recorded unless a
:class:`StageRecorder` is active (``with StageRecorder() as recorder: model.generate(...)``):
without one, :func:`stage` returns a shared do-nothing context, so the marks cost one global
read each (a handful per window). Stages may nest; each keeps its own wall time, so a stage's
time includes the stages inside it. One recorder is active at a time (per process).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

_active: StageRecorder | None = None
_IDLE = contextlib.nullcontext()


@dataclass(frozen=True)
class Interval:
    """One pass through a stage: its name and ``perf_counter`` times (seconds)."""

    name: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(kw_only=True)
class StageRecorder:
    """Records every pass through a :func:`stage` while it is active (a context manager).

    ``synchronize``: called before each clock reading (e.g. ``torch.cuda.synchronize`` when the
    model runs on a GPU, whose work is otherwise still queued when the Python call returns)."""

    synchronize: Callable[[], None] | None = None
    intervals: list[Interval] = field(default_factory=list)

    def __enter__(self) -> StageRecorder:
        global _active
        if _active is not None:
            raise RuntimeError("a StageRecorder is already recording")
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = None

    def clock(self) -> float:
        if self.synchronize is not None:
            self.synchronize()
        return time.perf_counter()

    @contextlib.contextmanager
    def record(self, name: str) -> Iterator[None]:
        """Time the block as one pass through stage ``name`` (kept even when it raises)."""
        start = self.clock()
        try:
            yield
        finally:
            self.intervals.append(Interval(name=name, start=start, end=self.clock()))

    def seconds(self) -> dict[str, float]:
        """Total wall time by stage, in the order the stages were first left."""
        totals: dict[str, float] = {}
        for interval in self.intervals:
            totals[interval.name] = totals.get(interval.name, 0.0) + interval.seconds
        return totals

    def calls(self) -> dict[str, int]:
        """Passes through each stage."""
        counts: dict[str, int] = {}
        for interval in self.intervals:
            counts[interval.name] = counts.get(interval.name, 0) + 1
        return counts


def stage(name: str) -> contextlib.AbstractContextManager:
    """A context that times its block as stage ``name`` in the active :class:`StageRecorder`,
    or does nothing when none is active."""
    recorder = _active
    return _IDLE if recorder is None else recorder.record(name)
