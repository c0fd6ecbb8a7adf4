"""The results' ``metrics``: one entry per number, saying what computed it.

Each entry holds the metric's ``label``, ``value`` (the generated set's), ``reference_value``
(the reference's own score, where the metric scores one side at a time), ``better``, ``unit``,
the ``model`` (:func:`v2a.evaluate.provenance.model_record`: plug-in, options, weights) and the
``settings`` it was computed with; two results compare only where models and settings agree
(:func:`v2a.evaluate.provenance.check_comparable`).
"""

from __future__ import annotations

from typing import Any

from v2a.evaluate.against_reference import (
    NOVELTY_MODEL,
    NOVELTY_SETTINGS,
    TRANSFER_MODEL,
    TRANSFER_SETTINGS,
    mean_of,
)
from v2a.evaluate.catalogue import (
    CLASSES,
    EVENT_CLASSES,
    FRECHET,
    NOVELTY,
    OFFSETS,
    ONSETS,
    ONSETS_VS_REFERENCE,
    SEMANTIC,
    SYNC,
    TEXT_AUDIO,
    Metric,
)
from v2a.evaluate.classify import ClassScorer
from v2a.evaluate.frames import FrameFeatures
from v2a.evaluate.offsets import OffsetScorer
from v2a.evaluate.provenance import NO_WEIGHTS
from v2a.evaluate.selection import Selection
from v2a.evaluate.semantic import SemanticScorer
from v2a.evaluate.sync import SyncScorer
from v2a.evaluate.text_classes import EventClassScorer, event_class_entry
from v2a.evaluate.text_score import TextScorer

#: The onset detector is v2a's own arithmetic (:mod:`v2a.metrics.onsets`), no trained model.
ONSET_MODEL = {"plugin": "v2a.metrics.onsets", "options": {"detector": "spectral flux"},
               "weights": NO_WEIGHTS}


def entry(metric: Metric, value: Any, *, model: dict[str, Any] | None,
          settings: dict[str, Any], reference_value: Any = None, **extra: Any) -> dict[str, Any]:
    return {"label": metric.label, "value": value, "reference_value": reference_value,
            "better": metric.better, "unit": metric.unit, "model": model, "settings": settings,
            **extra}


def frechet_entry(metric: Metric, feature: FrameFeatures) -> dict[str, Any]:
    result = feature.result()
    settings = {"sample_rate": result["sample_rate"], "encoder_rate": result["encoder_rate"],
                "dim": result["dim"], "transform": result.get("transform")}
    return entry(metric, result["distance"], model=feature.record, settings=settings,
                 frames={"generated": result["frames_generated"],
                         "reference": result["frames_reference"]})


def model_free_entry(metric: Metric, clips: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The entry of NS or onset accuracy / AP (means over the pairs), None without pairs."""
    if metric.family == NOVELTY:
        value = mean_of(clips, "ns")
        model, settings = NOVELTY_MODEL, NOVELTY_SETTINGS
    else:
        field = {"onset_acc": "onset_accuracy", "onset_ap": "onset_ap"}[metric.name]
        value = mean_of(clips, "onset_transfer", field)
        model, settings = TRANSFER_MODEL, TRANSFER_SETTINGS
    return None if value is None else entry(metric, value, model=model, settings=settings)


def model_entry(metric: Metric, classes: dict[str, ClassScorer], offsets: dict[str, OffsetScorer],
                semantic: dict[str, SemanticScorer], clips: dict[str, dict[str, Any]],
                text: dict[str, TextScorer] | None = None) -> dict[str, Any] | None:
    """The entry of a KL/IS, DeSync/SS, semantic or audio-text metric, None when it has no
    value; the per-clip values are in each clip's ``offsets``, ``semantic`` or ``text``."""
    if metric.family == CLASSES:
        scorer = classes.get(metric.plugin[1])
        values = scorer.entry_values(metric) if scorer is not None else None
    else:
        field, scorers = {SEMANTIC: ("semantic", semantic), TEXT_AUDIO: ("text", text or {})
                          }.get(metric.family, ("offsets", offsets))
        scorer = scorers.get(metric.name)
        per_clip = [c[field][metric.name] for c in clips.values()
                    if metric.name in c.get(field, {})]
        values = scorer.values(per_clip) if scorer is not None else None
    if values is None:
        return None
    return entry(metric, values[0], reference_value=values[1], model=scorer.record,
                 settings=scorer.settings())


def side_entry(metric: Metric, results: dict[str, Any], sync: SyncScorer | None
               ) -> dict[str, Any] | None:
    """The entry of onset F1 (against ground-truth events) or of the sync score, each side
    scored alone; None when it has no value."""
    if metric.family == ONSETS and results["onsets"]:
        onsets = results["onsets"]
        return entry(metric, onsets["generated"]["onset_f1"],
                     reference_value=onsets.get("reference", {}).get("onset_f1"),
                     model=ONSET_MODEL, settings={"tolerance": onsets["tolerance"],
                                                  "sample_rate": onsets["sample_rate"]})
    if metric.family == SYNC and results["sync"] and sync is not None:
        scores = results["sync"]
        return entry(metric, scores["generated"], reference_value=scores.get("reference"),
                     model=sync.record, settings={"sample_rate": sync.sample_rate})
    return None


def metric_entries(selection: Selection, results: dict[str, Any], features: list[FrameFeatures],
                   sync: SyncScorer | None, *, classes: dict[str, ClassScorer],
                   offsets: dict[str, OffsetScorer], semantic: dict[str, SemanticScorer] | None = None,
                   text: dict[str, TextScorer] | None = None,
                   event_classes: EventClassScorer | None = None) -> dict[str, dict[str, Any]]:
    """The entries of the metrics that ran and gave a value, in the selection's order."""
    by_encoder = {f.name: f for f in features}
    entries = {}
    for metric in selection.running:
        if metric.family == FRECHET:
            found = (frechet_entry(metric, by_encoder[metric.encoder])
                     if metric.encoder in by_encoder else None)
        elif metric.family in (NOVELTY, ONSETS_VS_REFERENCE):
            found = model_free_entry(metric, results["clips"])
        elif metric.family in (CLASSES, OFFSETS, SEMANTIC, TEXT_AUDIO):
            found = model_entry(metric, classes, offsets, semantic or {}, results["clips"], text)
        elif metric.family == EVENT_CLASSES:
            values = event_class_entry(metric, results["clips"], event_classes)
            found = entry(metric, **values) if values is not None else None
        else:
            found = side_entry(metric, results, sync)
        if found is not None:
            entries[metric.name] = found
    return entries


def unscored(selection: Selection, entries: dict[str, Any]) -> dict[str, str]:
    """Metrics of an explicit selection that ran but gave no value (no clip had what they
    read, or their model was refused: the notes say why), one sentence each."""
    if not selection.explicit:
        return {}
    return {m.name: f"{m.label} skipped: nothing could be scored (see the notes)"
            for m in selection.running if m.name not in entries}
