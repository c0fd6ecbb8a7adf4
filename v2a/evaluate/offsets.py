"""DeSync and SS: the audio-video offset a :class:`~v2a.interfaces.SyncClassifier` plug-in
(Synchformer, SparseSync) finds in each clip.

For each clip, on each segment of :func:`v2a.metrics.desync.segments` (its first and last
4.8 s), the classifier reads the segment's audio (mono at its rate) and the visual streams it
needs, encoded over the same seconds of the clip's video (:func:`v2a.features.encode_video`);
the segment's offset is that of its highest logit (:func:`v2a.metrics.desync.offset_of`), and
the set's value :func:`v2a.metrics.desync.desync` (seconds; 0 is in sync). The visual stream
``<name>`` comes from the recipe's ``visual_encoders.<name>`` when it has one, else from the
registered visual encoder named ``<name>`` with its defaults. Offsets are not cached (they read
the video too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from v2a.evaluate.catalogue import OFFSETS, Metric
from v2a.evaluate.models import model_choice
from v2a.evaluate.selection import build_scorers
from v2a.evaluate.options import EvaluationError, Options
from v2a.evaluate.pairing import PairAudio, common_seconds
from v2a.evaluate.provenance import model_record
from v2a.features import encode_video
from v2a.interfaces import Reranker, SyncClassifier, VisualEncoder
from v2a.media import MediaError
from v2a.metrics.desync import WINDOW, desync, offset_of, segments
from v2a.recipe import Recipe, build_frozen
from v2a.registry import Registry


class OffsetScorer:
    """A sync classifier and the visual encoders of the streams it reads."""

    def __init__(self, *, plugin: str, classifier: Reranker, encoders: dict[str, VisualEncoder],
                 record: dict[str, Any], device: torch.device):
        self.plugin = plugin
        self.classifier = classifier.to(device)
        self.encoders = {name: e.to(device) for name, e in encoders.items()}
        self.record = record
        self.device = device
        self.sample_rate = int(classifier.sample_rate)
        self.window = float(getattr(classifier, "window_seconds", WINDOW))  # SyncClassifier's

    @torch.inference_mode()
    def clip_offsets(self, audio: PairAudio, video: Path) -> dict[str, list[float]]:
        """Each side's offset (seconds) on each segment of the clip."""
        gen, ref = audio.get(self.sample_rate)
        duration = common_seconds(video, gen.shape[1], self.sample_rate)
        found: dict[str, list[float]] = {"generated": []}
        if ref is not None:
            found["reference"] = []
        for start, end in segments(duration, window=self.window):
            try:
                streams = encode_video(self.encoders, video, end - start, start=start,
                                       device=self.device)
            except MediaError as exc:
                raise EvaluationError(str(exc)) from None
            span = slice(round(start * self.sample_rate), round(end * self.sample_rate))
            for side, wav in (("generated", gen), ("reference", ref)):
                if wav is not None:
                    logits = self.classifier.offset_logits(wav[None, :, span].to(self.device),
                                                           streams)
                    found[side].append(float(offset_of(logits[0].float().cpu().numpy(),
                                                       self.classifier.offsets)))
        return found

    @staticmethod
    def values(per_clip: list[dict[str, list[float]]]) -> tuple[float, float | None] | None:
        """(generated DeSync, reference DeSync) over the clips, or None without any."""
        if not per_clip:
            return None
        reference = ([c["reference"] for c in per_clip] if "reference" in per_clip[0] else None)
        return desync([c["generated"] for c in per_clip]), (desync(reference) if reference else None)

    def settings(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "window": self.window,
                "offsets": [float(o) for o in self.classifier.offsets]}


def stream_encoder(name: str, recipe: Recipe | None, registry: Registry, options: Options
                   ) -> tuple[VisualEncoder, dict[str, Any]] | None:
    """The visual encoder of the stream ``name``: the recipe's, else the registered one of that
    name with its defaults and ``--model``; None when neither exists."""
    if not (recipe is not None and recipe.has(f"visual_encoders.{name}")) and \
            name not in registry.names("visual_encoder"):
        return None
    choice = model_choice("visual_encoder", name, registry=registry, options=options,
                          recipe=recipe).choice
    return build_frozen(choice), model_record(choice.as_data())


def build_offset_scorer(metric: Metric, recipe: Recipe | None, registry: Registry,
                        device: torch.device, options: Options) -> OffsetScorer | str:
    """The :class:`OffsetScorer` of a DeSync/SS metric, or the sentence saying why it is
    skipped. The classifier takes the recipe's reranker options when the recipe's reranker is
    the same plug-in, else its defaults."""
    plugin = metric.plugin[1]
    choice = model_choice("reranker", plugin, registry=registry, options=options,
                          recipe=recipe).choice
    classifier = build_frozen(choice)
    if not isinstance(classifier, SyncClassifier):
        return (f"{metric.label} skipped: the reranker plug-in {plugin!r} predicts no offsets (it "
                "is not a SyncClassifier)")
    encoders, records = {}, {}
    for name in classifier.video_streams:
        found = stream_encoder(name, recipe, registry, options)
        if found is None:
            return (f"{metric.label} skipped: {plugin!r} reads the visual stream {name!r}, which "
                    "neither the recipe nor a registered visual encoder of that name provides")
        encoders[name], records[name] = found
    record = {**model_record(choice.as_data()), "visual_encoders": records}
    return OffsetScorer(plugin=plugin, classifier=classifier, encoders=encoders, record=record,
                        device=device)


def build_offset_scorers(metrics: list[Metric], recipe: Recipe | None, registry: Registry,
                         device: torch.device, skipped: dict[str, str], options: Options,
                         ) -> dict[str, OffsetScorer]:
    """Metric name → :class:`OffsetScorer` for the running DeSync/SS ``metrics``; those that
    cannot run go into ``skipped``."""
    return build_scorers(metrics, OFFSETS, skipped, lambda metric: build_offset_scorer(
        metric, recipe, registry, device, options))
