"""The evaluation: :func:`evaluate` prepares what every pair is scored with (:func:`prepare`),
scores each pair (:meth:`Evaluation.score_pair`) and gathers the results
(:meth:`Evaluation.results`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from v2a.evaluate.benchmark import (
    ONSET_RATE,
    ceiling_codec,
    ground_truth,
    score_onsets,
    summarise_sides,
    wrong_videos,
)
from v2a.evaluate.against_reference import novelty_of, onset_transfer_of
from v2a.evaluate.catalogue import EVENT_CLASSES, NOVELTY, ONSETS, ONSETS_VS_REFERENCE, SYNC
from v2a.evaluate.classify import ClassScorer, build_class_scorers
from v2a.evaluate.frames import FrameFeatures, add_frames, build_features, encoder_choice
from v2a.evaluate.models import model_choice, untrained_reason, visual_model_choice
from v2a.evaluate.options import Options, check_options
from v2a.evaluate.pairing import LENGTH_WARNING, Pair, PairAudio, pair_folders
from v2a.evaluate.plots import plot_pair
from v2a.evaluate.offsets import OffsetScorer, build_offset_scorers
from v2a.evaluate.records import metric_entries, unscored
from v2a.evaluate.selection import Selection, inputs_given, select
from v2a.evaluate.semantic import SemanticScorer, build_semantic_scorers
from v2a.evaluate.store import FeatureStore
from v2a.evaluate.sync import SyncScorer, build_sync_scorer
from v2a.evaluate.text_classes import TEXT_CLASS_ACC, EventClassScorer
from v2a.evaluate.text_score import ClipTexts, TextScorer, build_text_scorers, clip_texts
from v2a.interfaces import AudioCodec
from v2a.log import warn
from v2a.media import find_video
from v2a.recipe import Recipe, load_recipe
from v2a.registry import Registry, default_registry
from v2a.synth import Event


@dataclass(kw_only=True)
class Evaluation:
    """What every pair of one evaluation is scored with, and what the pairs have found so far
    that the results mention (clips without a video, clips whose sides differ in length)."""

    options: Options
    device: torch.device
    pairs: list[Pair]
    only_generated: list[str]  # stems without a reference
    only_reference: list[str]  # stems without a generated clip
    truth: dict[str, list[Event]]  # stem → ground-truth events
    wrong: dict[str, str]  # stem → the stem of the control's events (benchmark.wrong_videos)
    features: list[FrameFeatures]
    sync: SyncScorer | None
    codec: AudioCodec | None  # the codec of the "reference via codec" ceiling
    notes: list[str]
    selection: Selection
    store: FeatureStore
    classes: dict[str, ClassScorer] = field(default_factory=dict)  # plug-in → its KL/IS scorer
    offsets: dict[str, OffsetScorer] = field(default_factory=dict)  # metric → its DeSync/SS scorer
    semantic: dict[str, SemanticScorer] = field(default_factory=dict)  # metric → its scorer
    text: dict[str, TextScorer] = field(default_factory=dict)  # metric → its CLAP-score scorer
    texts: ClipTexts | None = None  # each clip's text, for the audio-text metrics
    event_classes: EventClassScorer | None = None  # text_class_acc and class_shares
    no_text: list[str] = field(default_factory=list)
    no_video: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def videos(self) -> Path:
        """The folder of the videos for the sync score."""
        return videos_folder(self.options)

    def score_pair(self, pair: Pair) -> dict[str, Any]:
        """One pair's entry of the results' ``clips``; adds its frames to the Fréchet statistics
        and, with ``--plots``, writes its plot."""
        audio = PairAudio(pair)
        gen, ref = audio.get(ONSET_RATE)  # mono, for onsets and plots
        gen_seconds, ref_seconds = audio.seconds
        if abs(gen_seconds - ref_seconds) > LENGTH_WARNING:
            self.mismatched.append(pair.stem)
        clip = {"generated": str(pair.generated),
                "reference": str(pair.reference) if pair.reference is not None else None,
                "seconds": min(gen_seconds, ref_seconds), "seconds_generated": gen_seconds,
                "seconds_reference": ref_seconds}
        add_frames(self.features, audio, self.device, self.store)
        events = self.truth.get(pair.stem)
        if events is not None:
            wrong = self.wrong.get(pair.stem)
            clip["onsets"] = score_onsets(
                audio, events, self.options.tolerance, self.codec, self.device,
                wrong_events=self.truth[wrong] if wrong is not None else None)
            if wrong is not None:
                clip["wrong_video"] = wrong
        self.score_without_events(audio, clip)
        if self.options.plots is not None:
            plot_pair(self.options.plots, pair.stem, gen.numpy(), ref.numpy(), ONSET_RATE,
                      truth=[e.time for e in events] if events is not None else None,
                      f1=clip["onsets"]["generated"]["onset_f1"] if "onsets" in clip else None)
        return clip

    def score_without_events(self, audio: PairAudio, clip: dict[str, Any]) -> None:
        """Into ``clip``: the scores of one pair that need no ground truth (class probabilities
        go into their scorers, NS, onset transfer, the sync score, the offsets and the
        semantic cosines, the audio-text cosines, the classes of the detected onsets)."""
        if self.event_classes is not None:
            clip["event_classes"] = self.event_classes.score(audio)
        for scorer in self.classes.values():
            scorer.add(audio, self.store, self.device)
        if self.text:
            self.score_text(audio, clip)
        if self.selection.runs(NOVELTY):
            clip["ns"] = novelty_of(audio)
        if self.selection.runs(ONSETS_VS_REFERENCE):
            clip["onset_transfer"] = onset_transfer_of(audio)
        if self.sync is None and not self.offsets and not self.semantic:
            return
        video = find_video(self.videos, audio.pair.stem)
        if video is None:
            self.no_video.append(audio.pair.stem)
            return
        clip["video"] = str(video)
        if self.sync is not None:
            clip["sync"] = self.sync.score_pair(audio, video)
        if self.offsets:
            clip["offsets"] = {name: s.clip_offsets(audio, video) for name, s in self.offsets.items()}
        if self.semantic:
            clip["semantic"] = {name: s.clip_cosines(audio, video, self.store)
                                for name, s in self.semantic.items()}

    def score_text(self, audio: PairAudio, clip: dict[str, Any]) -> None:
        """Into ``clip``: its text (``caption``) and each audio-text metric's cosines with it
        (``text``); a clip without a text is noted."""
        text = self.texts.texts.get(audio.pair.stem) if self.texts is not None else None
        if text is None:
            self.no_text.append(audio.pair.stem)
            return
        clip["caption"] = text
        clip["text"] = {name: s.clip_cosines(audio, text, self.store)
                        for name, s in self.text.items()}

    def results(self, clips: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The results (the layout of ``results.json``, less the command line and options) of
        the scored ``clips``, with a warning and notes for what the pairs found."""
        if self.mismatched:
            warn(f"{len(self.mismatched)} generated clips differ in length from their reference "
                 f"by more than {LENGTH_WARNING:g} s (e.g. {self.mismatched[0]!r}); they are "
                 "compared over the shorter of the two")
        notes = list(self.notes)
        if self.no_video:
            notes.append(f"{len(self.no_video)} clips have no video in {self.videos} and have no "
                         "sync score, offsets or semantic cosines")
        if self.no_text and self.texts is not None:
            notes.append(f"{len(self.no_text)} clips have no text (from {self.texts.source}) "
                         "and are left out of the CLAP score")
        if self.event_classes is not None and (note := self.event_classes.note()) is not None:
            notes.append(note)
        notes += [note for f in self.features if (note := f.bias_note()) is not None]
        results = {
            "protocol": self.options.protocol,
            "counts": {"pairs": len(self.pairs), "generated_only": self.only_generated,
                       "reference_only": self.only_reference,
                       "with_events": sum(p.stem in self.truth for p in self.pairs)},
            "frechet": {f.name: f.result() for f in self.features},
            "onsets": summarise_sides([c["onsets"] for c in clips.values() if "onsets" in c],
                                      tolerance=self.options.tolerance),
            "sync": None if self.sync is None else self.sync.summary(
                [c["sync"] for c in clips.values() if "sync" in c]),
            "clips": clips, "notes": notes,
        }
        metrics = metric_entries(self.selection, results, self.features, self.sync,
                                 classes=self.classes, offsets=self.offsets,
                                 semantic=self.semantic, text=self.text,
                                 event_classes=self.event_classes)
        skipped = {**self.selection.skipped, **unscored(self.selection, metrics)}
        layout = ([{"name": m.name, "label": m.label, "better": m.better, "unit": m.unit}
                   for m in self.selection.asked] if self.selection.explicit else None)
        return {**results, "layout": layout, "metrics": metrics, "skipped": skipped,
                "features": {"computed": dict(self.store.computed),
                             "loaded": dict(self.store.loaded)}}


def warn_unpaired(options: Options, only_generated: list[str], only_reference: list[str]) -> None:
    """A warning for each side's stems that have no partner (they are left out)."""
    if only_generated:
        warn(f"{len(only_generated)} generated clips have no reference in {options.reference} "
             f"(e.g. {only_generated[0]!r}) and are left out")
    if only_reference:
        warn(f"{len(only_reference)} references have no generated clip in {options.generated} "
             f"(e.g. {only_reference[0]!r}) and are left out")


def videos_folder(options: Options) -> Path:
    """Where each clip's video is looked for: ``--videos``, else the reference folder, else the
    generated folder (the mp4s ``v2a generate`` writes carry the video)."""
    return options.videos or options.reference or options.generated


def skip_untrained(selection: Selection, recipe: Recipe | None, registry: Registry,
                   options: Options) -> None:
    """Skip the running metrics whose model (any of them: a semantic metric has an audio and
    a visual one) would have random weights (see :mod:`v2a.evaluate.models`), each with the
    sentence that says how to give them."""
    for metric in selection.running:
        if metric.encoder == "codec_latents":
            continue
        for kind, plugin in (p for p in (metric.plugin, metric.video_plugin) if p is not None):
            if plugin not in registry.names(kind):
                continue  # said by the selection, or by build_features for --encoders
            if kind == "audio_encoder":
                model = encoder_choice(plugin, registry, recipe, options)
            elif metric.video_plugin is not None:
                model = visual_model_choice(plugin, registry=registry, options=options,
                                            recipe=recipe)
            else:
                model = model_choice(kind, plugin, registry=registry, options=options,
                                     recipe=recipe)
            reason = untrained_reason(metric.label, model, options)
            if reason is not None:
                selection.skipped[metric.name] = reason
                break


def prepare(options: Options) -> Evaluation:
    """Check the options, pair the folders, read the ground truth and the recipe, choose the
    metrics, and build the encoders, the sync scorer and the ceiling's codec."""
    check_options(options)
    registry = default_registry()
    device = torch.device(options.device)
    pairs, only_generated, only_reference = pair_folders(options.generated, options.reference)
    warn_unpaired(options, only_generated, only_reference)
    truth = ground_truth(options.events, options.reference, pairs)
    recipe = None
    if options.recipe is not None:
        recipe = load_recipe(options.recipe, options.overrides, **options.recipe_options)
    folder = videos_folder(options)
    texts = clip_texts(options, truth)
    given = inputs_given(options, has_events=any(p.stem in truth for p in pairs),
                         has_recipe=recipe is not None,
                         has_videos=folder.is_dir() and any(find_video(folder, p.stem) is not None
                                                            for p in pairs),
                         has_text=any(p.stem in texts.texts for p in pairs))
    selection = select(options, registry, given=given)
    if not selection.runs(ONSETS):
        truth = {}
    notes: list[str] = []
    skip_untrained(selection, recipe, registry, options)
    features = build_features(selection.encoders, recipe, device, notes, options)
    sync = build_sync_scorer(recipe, options.checkpoint, device, notes) if selection.runs(SYNC) else None
    classes = build_class_scorers(selection.running, recipe, registry, device, selection.skipped,
                                  options)
    offsets = build_offset_scorers(selection.running, recipe, registry, device, selection.skipped,
                                   options)
    semantic = build_semantic_scorers(selection.running, recipe, registry, device,
                                      selection.skipped, options)
    text = build_text_scorers(selection.running, recipe, registry, device, selection.skipped,
                              options, texts.source)
    event_classes = None
    if selection.runs(EVENT_CLASSES):
        reads_text = TEXT_CLASS_ACC in {m.name for m in selection.running}
        event_classes = EventClassScorer(texts=texts if reads_text else None)
    return Evaluation(classes=classes, offsets=offsets, semantic=semantic, text=text, texts=texts,
        event_classes=event_classes,
        options=options, device=device, pairs=pairs, only_generated=only_generated,
        only_reference=only_reference, truth=truth, wrong=wrong_videos(pairs, truth),
        features=features, sync=sync,
        codec=ceiling_codec(recipe, features, device) if truth and options.reference else None,
        notes=notes, selection=selection, store=FeatureStore(root=options.features))


def evaluate(options: Options, progress: bool = False) -> dict[str, Any]:
    """Score the generated folder (against the reference folder when there is one); returns the results (the JSON
    layout of ``results.json``, less the command line and options). ``progress``: a progress
    bar over the pairs (with two pairs or more)."""
    evaluation = prepare(options)
    quiet = not progress or len(evaluation.pairs) < 2
    pairs = tqdm(evaluation.pairs, desc="evaluating", unit="clip", disable=True if quiet else None)
    clips = {pair.stem: evaluation.score_pair(pair) for pair in pairs}
    return evaluation.results(clips)
