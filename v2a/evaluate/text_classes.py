"""Class scores of the synthetic benchmark that need no timing (for text-only generation).

Each clip's generated audio is read as the synthetic benchmark reads it: its onsets are detected
(:func:`v2a.metrics.onsets.detect_onsets` at :data:`~v2a.evaluate.benchmark.ONSET_RATE`) and
the class of the sound at each onset is estimated from its dominant frequency
(:func:`v2a.metrics.onsets.estimate_class`, the classes and fundamentals of
:data:`v2a.synth.FUNDAMENTALS`). An onset whose class cannot be estimated (it lies too close to
the clip's end for a spectrum) is not an event here. No event is matched to a time.

* ``text_class_acc``, class accuracy against the text: a clip's value is the share of its events
  whose class its text names (:func:`named_classes`); the set's value is the mean over the clips
  whose text names a class and that have an event (``pooled``: the same share over all their
  events together). A text naming no class counts as no text.
* ``class_shares``: for each class, its share of all the set's events (a class → share dict).

The reference's audio, where there is one, is scored the same way beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from v2a.evaluate.benchmark import ONSET_RATE
from v2a.evaluate.catalogue import Metric
from v2a.evaluate.pairing import PairAudio
from v2a.evaluate.provenance import NO_WEIGHTS
from v2a.evaluate.text_score import ClipTexts
from v2a.metrics.onsets import detect_onsets, estimate_class
from v2a.synth import CLASS_NAMES, FUNDAMENTALS

TEXT_CLASS_ACC, CLASS_SHARES = "text_class_acc", "class_shares"
SIDES = ("generated", "reference")

#: The onset detector and the class estimate are v2a's own arithmetic, no trained model.
CLASS_MODEL = {"plugin": "v2a.metrics.onsets",
               "options": {"detector": "spectral flux", "classes": "nearest fundamental"},
               "weights": NO_WEIGHTS}


def named_classes(text: str) -> list[str]:
    """The synthetic classes whose words (``red disc`` for ``red_disc``) occur in ``text``,
    whole words, case and runs of white space ignored; in :data:`v2a.synth.CLASS_NAMES` order."""
    words = " ".join(text.lower().split())
    return [name for name in CLASS_NAMES
            if re.search(rf"\b{re.escape(name.replace('_', ' '))}\b", words)]


def sounded_classes(wav, sample_rate: int) -> list[str]:
    """The estimated class of each detected onset of ``wav`` (``[n]`` or ``[c, n]``), in time
    order; onsets whose class cannot be estimated are left out."""
    classes = (estimate_class(wav, sample_rate, time, fundamentals=FUNDAMENTALS)
               for time in detect_onsets(wav, sample_rate))
    return [name for name in classes if name]


@dataclass(kw_only=True)
class EventClassScorer:
    """Scores each pair's events by class; ``texts`` (None: ``class_shares`` alone runs) gives
    each clip's text for ``text_class_acc``. ``no_named`` collects the clips whose text names no
    class (or that have none)."""

    texts: ClipTexts | None
    no_named: list[str] = field(default_factory=list)

    def score(self, audio: PairAudio) -> dict[str, Any]:
        """The pair's ``event_classes``: each side's estimated classes, and ``named``, the
        classes its text names (only where it names one)."""
        gen, ref = audio.get(ONSET_RATE)
        found: dict[str, Any] = {"generated": sounded_classes(gen.numpy(), ONSET_RATE)}
        if ref is not None:
            found["reference"] = sounded_classes(ref.numpy(), ONSET_RATE)
        if self.texts is not None:
            named = named_classes(self.texts.texts.get(audio.pair.stem, ""))
            if named:
                found["named"] = named
            else:
                self.no_named.append(audio.pair.stem)
        return found

    def note(self) -> str | None:
        """The note saying how many clips have no text naming a class, or None."""
        if not self.no_named or self.texts is None:
            return None
        return (f"{len(self.no_named)} clips have no text naming a synthetic class (from "
                f"{self.texts.source}) and are left out of class accuracy against the text")

    def settings(self, metric: Metric) -> dict[str, Any]:
        """What ``metric``'s value was computed with: the rate, the classes' fundamentals and
        (``text_class_acc``) where the texts came from."""
        settings = {"sample_rate": ONSET_RATE, "classes": dict(FUNDAMENTALS)}
        if metric.name == TEXT_CLASS_ACC and self.texts is not None:
            settings["text"] = self.texts.source
        return settings


def text_accuracy(found: list[dict[str, Any]], side: str) -> dict[str, Any] | None:
    """``side``'s class accuracy against the text over the pairs' ``event_classes``: ``mean``
    (of the clips' shares), ``pooled`` (over their events), ``clips`` and ``events`` counted;
    None when no clip with a naming text has an event on that side."""
    shares, right, events = [], 0, 0
    for clip in found:
        classes = clip.get(side)
        if "named" not in clip or not classes:
            continue
        hits = sum(name in clip["named"] for name in classes)
        shares.append(hits / len(classes))
        right, events = right + hits, events + len(classes)
    if not shares:
        return None
    return {"mean": sum(shares) / len(shares), "pooled": right / events, "clips": len(shares),
            "events": events}


def class_shares(found: list[dict[str, Any]], side: str) -> dict[str, float] | None:
    """Class → its share of all of ``side``'s events over the pairs (every class listed, in
    :data:`v2a.synth.CLASS_NAMES` order; the shares sum to 1); None without any event."""
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for clip in found:
        for name in clip.get(side) or []:
            counts[name] += 1
    total = sum(counts.values())
    return None if not total else {name: count / total for name, count in counts.items()}


def event_class_entry(metric: Metric, clips: dict[str, dict[str, Any]],
                      scorer: EventClassScorer | None) -> dict[str, Any] | None:
    """The keyword arguments of :func:`v2a.evaluate.records.entry` (``value``,
    ``reference_value``, ``model``, ``settings`` and counts) of ``text_class_acc`` or
    ``class_shares`` over the ``clips`` of the results; None when the generated side has no
    value (or ``scorer`` is None: the metric did not run)."""
    if scorer is None:
        return None
    found = [clip["event_classes"] for clip in clips.values() if "event_classes" in clip]
    sides = [side for side in SIDES if any(side in clip for clip in found)]
    if metric.name == CLASS_SHARES:
        value, reference = (class_shares(found, side) for side in SIDES)
        extra = {"events": {side: sum(len(clip.get(side, [])) for clip in found)
                            for side in sides}}
    else:
        scores = {side: score for side in sides if (score := text_accuracy(found, side))}
        value = scores["generated"]["mean"] if "generated" in scores else None
        reference = scores["reference"]["mean"] if "reference" in scores else None
        extra = {key: {side: score[key] for side, score in scores.items()}
                 for key in ("pooled", "clips", "events")}
    if value is None:
        return None
    return {"value": value, "reference_value": reference, "model": CLASS_MODEL,
            "settings": scorer.settings(metric), **extra}
