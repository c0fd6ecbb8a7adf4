"""The synthetic benchmark: generated audio against ``v2a synth``'s ground-truth events.

Onset F1 within ±tolerance, mean absolute onset offset and class accuracy
(:mod:`v2a.metrics.onsets`, classes told apart by :data:`v2a.synth.FUNDAMENTALS`), scored at
:data:`ONSET_RATE`, for up to four sides: the generated set; the generated set against another
clip's events (the "wrong video" control); the reference audio; and (with a recipe) the
reference passed through the recipe's codec, the ceiling of a model that generates that codec's
codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from v2a.evaluate.frames import FrameFeatures
from v2a.evaluate.options import EvaluationError
from v2a.evaluate.pairing import Pair, PairAudio
from v2a.interfaces import AudioCodec
from v2a.log import warn
from v2a.manifests import read_manifest
from v2a.metrics.onsets import matched, score_clip, summarise_onsets
from v2a.recipe import Recipe, build_frozen
from v2a.synth import FUNDAMENTALS, Event, read_events

ONSET_RATE = 16000  #: sample rate (Hz) at which onsets and classes are scored, and plots drawn


def truth_by_stem(events_path: Path) -> dict[str, list[Event]]:
    """Stem → ground-truth events, from ``events.jsonl`` (keyed by the manifest's clip ids) and
    the ``manifest.csv`` beside it: a clip's stem is its video's, and a clip of the manifest
    without events has none. Without a manifest a clip id is taken as the video's path. Clips
    that start inside their video are left out with a warning (whole-video audio cannot be
    scored against them)."""
    try:
        events = read_events(events_path)
    except (OSError, ValueError, KeyError) as exc:
        raise EvaluationError(f"{events_path} is not a readable events file ({exc})") from None
    manifest = events_path.parent / "manifest.csv"
    if manifest.is_file():
        videos, inside = {}, []
        for clip in read_manifest(manifest):
            if clip.start == 0:
                videos[clip.id] = clip.path
            else:
                inside.append(clip.id)
    else:  # a clip id is its video's path (the manifest's default), path@start for a later start
        videos = {key: key for key in events if "@" not in key}
        inside = [key for key in events if "@" in key]
    truth = {Path(path).stem: events.get(key, []) for key, path in videos.items()}
    if inside:
        warn(f"{len(inside)} clips of {manifest if manifest.is_file() else events_path} start "
             f"inside their video (e.g. {inside[0]!r}), so they cannot be scored against the "
             "audio of a whole video; left out")
    return truth


def ground_truth(events: Path | None, reference: Path | None, pairs: list[Pair]
                 ) -> dict[str, list[Event]]:
    """Stem → events from ``events`` (``--events``; None: ``REF/events.jsonl`` when it exists),
    empty without."""
    path = events
    if path is None and reference is not None and (reference / "events.jsonl").is_file():
        path = reference / "events.jsonl"
    elif path is not None and not path.is_file():
        raise EvaluationError(f"the events file {path} does not exist")
    truth = truth_by_stem(path) if path is not None else {}
    if truth and not any(p.stem in truth for p in pairs):
        warn(f"no clip of {path} is among the pairs; the synthetic metrics are left out")
    return truth


def wrong_videos(pairs: list[Pair], truth: dict[str, list[Event]]) -> dict[str, str]:
    """The control: stem → the stem whose events its generated audio is also scored against
    (the previous clip with events, in stem order); empty with fewer than two such clips."""
    scored = [p.stem for p in pairs if p.stem in truth]
    return {stem: scored[i - 1] for i, stem in enumerate(scored)} if len(scored) > 1 else {}


def through_codec(codec: AudioCodec, wav: Tensor, device: torch.device) -> Tensor:
    """``wav [c, n]`` encoded and decoded by ``codec`` (same length)."""
    with torch.inference_mode():
        codes = codec.encode(wav[None].to(device))
        return codec.decode(codes, length=wav.shape[1])[0].float().cpu()


def ceiling_codec(recipe: Recipe | None, features: list[FrameFeatures], device: torch.device
                  ) -> AudioCodec | None:
    """The recipe's codec (the FDD encoder's own when there is one), or None."""
    if recipe is None or not recipe.has("codec"):
        return None
    latents = next((f.encoder for f in features if f.name == "codec_latents"), None)
    if latents is not None:
        return latents.codec
    return build_frozen(recipe.choice("codec")).to(device)


def score_onsets(audio: PairAudio, events: list[Event], tolerance: float,
                 codec: AudioCodec | None, device: torch.device,
                 wrong_events: list[Event] | None = None) -> dict[str, dict]:
    """:func:`v2a.metrics.onsets.score_clip` of the generated audio, of the generated audio
    against ``wrong_events`` (another clip's: the control), of the reference and (with
    ``codec``) of the reference through the codec, each with its count of matched onsets."""

    def score(wav: Tensor, rate: int, truth: list[Event]) -> dict:
        return score_clip(wav.numpy(), rate, truth, tolerance, fundamentals=FUNDAMENTALS)

    gen, ref = audio.get(ONSET_RATE)
    scores = {"generated": score(gen, ONSET_RATE, events)}
    if wrong_events is not None:
        scores["generated_wrong_video"] = score(gen, ONSET_RATE, wrong_events)
    if ref is None:  # reference-free: the generated side alone
        return _with_matched(scores)
    scores["reference"] = score(ref, ONSET_RATE, events)
    if codec is not None:
        rate = int(codec.sample_rate)
        decoded = through_codec(codec, audio.get(rate, int(codec.channels))[1], device)
        scores["reference_via_codec"] = score(decoded, rate, events)
    return _with_matched(scores)


def _with_matched(scores: dict[str, dict]) -> dict[str, dict]:
    for side in scores.values():
        side["matched"] = matched(side)
    return scores


def summarise_sides(per_clip: list[dict[str, dict]], tolerance: float) -> dict[str, Any] | None:
    """Each side's :func:`~v2a.metrics.onsets.summarise_onsets` over the clips with events;
    None without any."""
    if not per_clip:
        return None
    return {"tolerance": tolerance, "sample_rate": ONSET_RATE,
            **{side: summarise_onsets([c[side] for c in per_clip]) for side in per_clip[0]}}
