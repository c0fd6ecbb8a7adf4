"""Which metrics an evaluation computes (:class:`Selection`), from ``--metrics``, ``--protocol``
or the default, and which it lists as skipped, with why.

The default, with a reference, is what ``v2a evaluate`` has always computed: the Fréchet
distances of ``--encoders``, the onset scores when there are ground-truth events and the sync
score with a recipe. Without a reference it is the whole catalogue but for the synthetic
classes' ``text_class_acc`` and ``class_shares`` (which mean nothing for audio outside
``v2a synth``'s classes, so they run only when ``--metrics`` names them): every metric that
needs no reference runs when its plug-in and inputs are there, and the others are listed as
skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from v2a.evaluate.catalogue import (
    CATALOGUE,
    CLASSES,
    EVENT_CLASSES,
    EVENTS,
    FRECHET,
    NOVELTY,
    OFFSETS,
    ONSETS,
    ONSETS_VS_REFERENCE,
    RECIPE,
    REFERENCE,
    SEMANTIC,
    SYNC,
    TEXT,
    TEXT_AUDIO,
    VIDEOS,
    Metric,
    frechet_metric,
    metrics_named,
    protocol_metrics,
    skip_reason,
)
from v2a.evaluate.options import Options
from v2a.registry import Registry

#: The families the engine computes today; a metric of another family is skipped, saying so.
COMPUTED = {FRECHET, ONSETS, SYNC, CLASSES, NOVELTY, ONSETS_VS_REFERENCE, OFFSETS, SEMANTIC,
            TEXT_AUDIO, EVENT_CLASSES}


@dataclass(kw_only=True)
class Selection:
    """The metrics asked for (in their table's order), those that run, and the skipped ones
    (name → one sentence). ``explicit``: chosen by ``--metrics``/``--protocol`` or reference-free
    (so the table lists them by name) rather than today's default."""

    asked: list[Metric]
    explicit: bool
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def running(self) -> list[Metric]:
        return [m for m in self.asked if m.name not in self.skipped]

    @property
    def encoders(self) -> list[str]:
        """The ``--encoders`` names of the Fréchet distances that run (each once)."""
        return list(dict.fromkeys(m.encoder for m in self.running if m.family == FRECHET))

    def runs(self, family: str) -> bool:
        return any(m.family == family for m in self.running)


def asked_metrics(options: Options, registry: Registry) -> tuple[list[Metric], bool]:
    """The metrics of ``--metrics`` or ``--protocol``, else the default (see the module's
    docstring); and whether they were chosen explicitly."""
    if options.metrics is not None:
        return metrics_named(options.metrics, registry), True
    if options.protocol is not None:
        return protocol_metrics(options.protocol, registry), True
    if options.reference is None:
        return [m for m in CATALOGUE.values() if m.family != EVENT_CLASSES], True
    asked = [frechet_metric(name) for name in options.encoders]
    return asked + [CATALOGUE["onset_f1"], CATALOGUE["sync"]], False


def select(options: Options, registry: Registry, *, given: set[str]) -> Selection:
    """The :class:`Selection` for ``options``, given what is there (of ``reference``,
    ``videos``, ``events``, ``recipe``). The default skips nothing itself: as before,
    :func:`v2a.evaluate.frames.build_features` and :func:`v2a.evaluate.sync.build_sync_scorer`
    note what they leave out, and without events there are no onset rows."""
    asked, explicit = asked_metrics(options, registry)
    selection = Selection(asked=asked, explicit=explicit)
    if not explicit:
        return selection
    for metric in asked:
        reason = skip_reason(metric, registry=registry, given=given)
        if reason is None and metric.family not in COMPUTED:
            reason = f"{metric.label} skipped: v2a evaluate does not compute it yet"
        if reason is not None:
            selection.skipped[metric.name] = reason
    return selection


def inputs_given(options: Options, *, has_events: bool, has_recipe: bool, has_videos: bool,
                 has_text: bool = False) -> set[str]:
    """What :func:`select` is told is there."""
    given = set()
    for need, present in ((REFERENCE, options.reference is not None), (EVENTS, has_events),
                          (RECIPE, has_recipe), (VIDEOS, has_videos), (TEXT, has_text)):
        if present:
            given.add(need)
    return given


Scorer = TypeVar("Scorer")


def build_scorers(metrics: list[Metric], family: str, skipped: dict[str, str],
                  build: Callable[[Metric], Scorer | str]) -> dict[str, Scorer]:
    """Metric name → what ``build`` makes for each running metric of ``family``; a metric
    ``build`` cannot make a scorer for (it returns the sentence saying why) goes into
    ``skipped``."""
    scorers = {}
    for metric in metrics:
        if metric.family != family or metric.name in skipped:
            continue
        built = build(metric)
        if isinstance(built, str):
            skipped[metric.name] = built
        else:
            scorers[metric.name] = built
    return scorers
