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
from v2a.evaluate.frames import FrameFeatures, add_frames, build_features
from v2a.evaluate.options import Options, check_options
from v2a.evaluate.pairing import LENGTH_WARNING, Pair, PairAudio, pair_folders
from v2a.evaluate.plots import plot_pair
from v2a.evaluate.sync import SyncScorer, build_sync_scorer
from v2a.interfaces import AudioCodec
from v2a.log import warn
from v2a.media import find_video
from v2a.recipe import load_recipe
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
    no_video: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def videos(self) -> Path:
        """The folder of the videos for the sync score."""
        return self.options.videos or self.options.reference

    def score_pair(self, pair: Pair) -> dict[str, Any]:
        """One pair's entry of the results' ``clips``; adds its frames to the Fréchet statistics
        and, with ``--plots``, writes its plot."""
        audio = PairAudio(pair)
        gen, ref = audio.get(ONSET_RATE)  # mono, for onsets and plots
        gen_seconds, ref_seconds = audio.seconds
        if abs(gen_seconds - ref_seconds) > LENGTH_WARNING:
            self.mismatched.append(pair.stem)
        clip = {"generated": str(pair.generated), "reference": str(pair.reference),
                "seconds": min(gen_seconds, ref_seconds), "seconds_generated": gen_seconds,
                "seconds_reference": ref_seconds}
        add_frames(self.features, audio, self.device)
        events = self.truth.get(pair.stem)
        if events is not None:
            wrong = self.wrong.get(pair.stem)
            clip["onsets"] = score_onsets(
                audio, events, self.options.tolerance, self.codec, self.device,
                wrong_events=self.truth[wrong] if wrong is not None else None)
            if wrong is not None:
                clip["wrong_video"] = wrong
        if self.sync is not None:
            video = find_video(self.videos, pair.stem)
            if video is None:
                self.no_video.append(pair.stem)
            else:
                clip["video"] = str(video)
                clip["sync"] = self.sync.score_pair(audio, video)
        if self.options.plots is not None:
            plot_pair(self.options.plots, pair.stem, gen.numpy(), ref.numpy(), ONSET_RATE,
                      truth=[e.time for e in events] if events is not None else None,
                      f1=clip["onsets"]["generated"]["onset_f1"] if "onsets" in clip else None)
        return clip

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
                         "sync score")
        notes += [note for f in self.features if (note := f.bias_note()) is not None]
        return {
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


def warn_unpaired(options: Options, only_generated: list[str], only_reference: list[str]) -> None:
    """A warning for each side's stems that have no partner (they are left out)."""
    if only_generated:
        warn(f"{len(only_generated)} generated clips have no reference in {options.reference} "
             f"(e.g. {only_generated[0]!r}) and are left out")
    if only_reference:
        warn(f"{len(only_reference)} references have no generated clip in {options.generated} "
             f"(e.g. {only_reference[0]!r}) and are left out")


def prepare(options: Options) -> Evaluation:
    """Check the options, pair the folders, read the ground truth and the recipe, and build the
    encoders, the sync scorer and the ceiling's codec."""
    check_options(options)
    device = torch.device(options.device)
    pairs, only_generated, only_reference = pair_folders(options.generated, options.reference)
    warn_unpaired(options, only_generated, only_reference)
    truth = ground_truth(options.events, options.reference, pairs)
    recipe = None
    if options.recipe is not None:
        recipe = load_recipe(options.recipe, options.overrides, **options.recipe_options)
    notes: list[str] = []
    features = build_features(options.encoders, recipe, device, notes)
    sync = build_sync_scorer(recipe, options.checkpoint, device, notes)
    return Evaluation(
        options=options, device=device, pairs=pairs, only_generated=only_generated,
        only_reference=only_reference, truth=truth, wrong=wrong_videos(pairs, truth),
        features=features, sync=sync,
        codec=ceiling_codec(recipe, features, device) if truth else None, notes=notes)


def evaluate(options: Options, progress: bool = False) -> dict[str, Any]:
    """Score the generated folder against the reference folder; returns the results (the JSON
    layout of ``results.json``, less the command line and options). ``progress``: a progress
    bar over the pairs (with two pairs or more)."""
    evaluation = prepare(options)
    quiet = not progress or len(evaluation.pairs) < 2
    pairs = tqdm(evaluation.pairs, desc="evaluating", unit="clip", disable=True if quiet else None)
    clips = {pair.stem: evaluation.score_pair(pair) for pair in pairs}
    return evaluation.results(clips)
