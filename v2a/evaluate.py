"""Evaluation: ``v2a evaluate GENERATED --reference REF`` scores generated audio against references.

Pairing. Every audio file of the folder GENERATED (``<stem>.wav``/``.flac``/...; a stem with only a
video, ``<stem>.mp4``, gives its audio track) is paired with the reference of the same stem in
REF: an audio file ``REF/<stem>.wav``, or the audio track of ``REF/<stem>.mp4``. A stem
``<stem>.v2a`` (what ``v2a generate`` writes beside a video without ``-o``) counts as ``<stem>``.
Both sides are compared over their common length (a clip generated for a video lasts as long as
the video, so they should match).

Metrics (one table row each, and JSON):

* **Fréchet distance** (:func:`frechet_distance`) between the per-frame feature distributions of
  the generated and the reference set, every frame of every clip pooled, for each audio encoder
  asked for: ``mel`` (log-mel frames: FDM), ``mfcc`` (:func:`mfcc` of the same frames) and
  ``codec_latents`` of the recipe's codec (FDD), or any registered
  :class:`~v2a.interfaces.AudioEncoder`. The statistics stream (:class:`Moments`), so any number
  of clips fits in memory. Few frames bias the distance upwards: the counts are reported.
* **Synthetic benchmark** (``v2a synth``'s ground-truth events): onset F1 within ±tolerance,
  mean absolute onset offset and class accuracy, for the generated set, for the reference audio
  and (with a recipe) for the reference passed through the recipe's codec, the ceiling of a model
  that generates that codec's codes. Scored at :data:`ONSET_RATE` by :mod:`v2a.synth`.
* **Sync score**: the recipe's reranker (SCAV, or any registered
  :class:`~v2a.interfaces.Reranker`, e.g. a pre-trained synchronisation model) scores each clip's
  audio against its video; mean over the clips, higher is better.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from v2a.errors import UserError
from v2a.features import encode_video
from v2a.media import find_video
from v2a.recipe import build_frozen
from v2a.synth import Event

ONSET_RATE = 16000  #: sample rate (Hz) at which onsets and classes are scored, and plots drawn
MFCC_COEFFICIENTS = 20
DEFAULT_ENCODERS = "mel,mfcc,codec_latents"
GENERATE_SUFFIX = ".v2a"  # `v2a generate` without -o writes <stem>.v2a.wav beside the video
LENGTH_WARNING = 0.1  # seconds two sides of a pair may differ before a warning


class EvaluationError(UserError):
    """Inputs ``v2a evaluate`` cannot use (one sentence)."""


class EvaluationOptionError(EvaluationError):
    """A bad option of ``v2a evaluate``."""

    exit_code = 2


def warn(text: str) -> None:
    print(f"v2a: warning: {text}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Fréchet distance and MFCC
# ---------------------------------------------------------------------------------------------


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues that
    rounding made slightly negative count as 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``:
    ``|mu1 - mu2|² + tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½)``.

    In float64, through symmetric eigendecompositions (no complex square roots, no inverse), so
    rank-deficient covariances (fewer frames than dimensions, constant features) are fine.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * cross
    return max(0.0, float(value))


class Moments:
    """Running mean and covariance of frames ``[t, d]`` (float64, shifted by the first frames'
    mean for accuracy), so that a whole evaluation set never sits in memory."""

    def __init__(self) -> None:
        self.count = 0
        self.shift: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def add(self, frames) -> None:
        x = np.asarray(frames, dtype=np.float64)
        if len(x) == 0:
            return
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.total = np.zeros_like(self.shift)
            self.outer = np.zeros((x.shape[1], x.shape[1]))
        y = x - self.shift
        self.total += y.sum(axis=0)
        self.outer += y.T @ y
        self.count += len(x)

    @property
    def dim(self) -> int:
        return 0 if self.shift is None else len(self.shift)

    def mean(self) -> np.ndarray:
        return self.shift + self.total / self.count

    def covariance(self) -> np.ndarray:
        centred = self.total / self.count
        return (self.outer - self.count * np.outer(centred, centred)) / (self.count - 1)


def frechet_of(a: Moments, b: Moments) -> float:
    """:func:`frechet_distance` of two sets' statistics; NaN when a side has under 2 frames."""
    if min(a.count, b.count) < 2:
        return float("nan")
    return frechet_distance(a.mean(), a.covariance(), b.mean(), b.covariance())


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_in, n_out]`` orthonormal DCT-II: ``x @ dct_matrix(n, k)`` = the first ``k`` coefficients."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    basis = np.cos(np.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    basis[:, 0] /= math.sqrt(2.0)
    return basis


def mfcc(log_mel, n_coefficients: int = MFCC_COEFFICIENTS) -> np.ndarray:
    """MFCCs of log-mel frames ``[t, n_mels]``: the orthonormal DCT-II over the mel axis, first
    ``n_coefficients`` (at most ``n_mels``) → ``[t, n_coefficients]``."""
    log_mel = np.asarray(log_mel, dtype=np.float64)
    return log_mel @ dct_matrix(log_mel.shape[-1], min(n_coefficients, log_mel.shape[-1]))


# ---------------------------------------------------------------------------------------------
# Pairing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    stem: str
    generated: Path
    reference: Path


def stem_of(path: Path) -> str:
    stem = path.stem
    return stem[: -len(GENERATE_SUFFIX)] if stem.endswith(GENERATE_SUFFIX) else stem


def audio_sources(folder: Path) -> dict[str, Path]:
    """Stem → the file holding its audio: an audio file, else a video's audio track; a
    ``<stem>.v2a.*`` file wins over ``<stem>.*``."""
    from v2a.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES

    def rank(path: Path) -> tuple[int, int]:
        kind = 0 if path.suffix.lower() in AUDIO_SUFFIXES else 1
        return (kind, 0 if path.stem.endswith(GENERATE_SUFFIX) else 1)

    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES + VIDEO_SUFFIXES:
            stem = stem_of(path)
            if stem not in found or rank(path) < rank(found[stem]):
                found[stem] = path
    return found


def pair_folders(generated: Path, reference: Path) -> tuple[list[Pair], list[str], list[str]]:
    """(pairs by stem, stems only generated, stems only in the reference)."""
    for folder, what in ((generated, "generated audio"), (reference, "reference")):
        if not folder.exists():
            raise EvaluationError(f"the {what} folder {folder} does not exist")
        if not folder.is_dir():
            raise EvaluationError(f"the {what} folder {folder} is a file; give a folder")
    gen, ref = audio_sources(generated), audio_sources(reference)
    if not gen:
        raise EvaluationError(f"the folder {generated} holds no audio or video file to evaluate")
    pairs = [Pair(stem, gen[stem], ref[stem]) for stem in sorted(gen.keys() & ref.keys())]
    if not pairs:
        raise EvaluationError(
            f"no file of {generated} has a reference of the same name in {reference} (e.g. "
            f"{sorted(gen)[0]!r}); the audio of <stem> is compared with {reference}/<stem>.wav or .mp4"
        )
    return pairs, sorted(gen.keys() - ref.keys()), sorted(ref.keys() - gen.keys())


def load(path: Path, sample_rate: int, channels: int) -> Tensor:
    """``[channels, n]`` audio of ``path``, a :class:`EvaluationError` when it cannot be read."""
    from v2a.media import MediaError, load_audio

    try:
        return load_audio(path, sample_rate=sample_rate, channels=channels)
    except MediaError as exc:
        from v2a.media import probe

        try:
            silent = probe(path).has_video and not probe(path).has_audio
        except MediaError:
            silent = False
        if silent:  # e.g. a `v2a synth --silent` folder given as the reference
            raise EvaluationError(f"{path} is a video without sound, so there is no audio to "
                                  "compare; give the folder of the true sound (a `v2a synth` set "
                                  "made without --silent)") from None
        raise EvaluationError(str(exc)) from None


class PairAudio:
    """The two sides of a pair, decoded once per (rate, channels) and cut to their common length."""

    def __init__(self, pair: Pair):
        self.pair = pair
        self.seconds: tuple[float, float] | None = None  # (generated, reference) before cutting
        self._decoded: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    def get(self, sample_rate: int, channels: int = 1) -> tuple[Tensor, Tensor]:
        """``(generated [c, n], reference [c, n])`` at ``sample_rate``, ``n`` the shorter length."""
        key = (int(sample_rate), int(channels))
        if key not in self._decoded:
            gen = load(self.pair.generated, *key)
            ref = load(self.pair.reference, *key)
            if self.seconds is None:
                self.seconds = (gen.shape[1] / key[0], ref.shape[1] / key[0])
            n = min(gen.shape[1], ref.shape[1])
            self._decoded[key] = (gen[:, :n], ref[:, :n])
        return self._decoded[key]


# ---------------------------------------------------------------------------------------------
# Frame features
# ---------------------------------------------------------------------------------------------


@dataclass
class FrameFeatures:
    """One Fréchet distance: its audio encoder, an optional transform of the encoder's frames
    (MFCC), and the running statistics of both sides."""

    name: str
    label: str
    encoder: Any
    options: dict[str, Any]  # the encoder's plug-in and options, every default filled in
    channels: int = 1
    transform: Any = None
    generated: Moments = field(default_factory=Moments)
    reference: Moments = field(default_factory=Moments)


LABELS = {"mel": "FD mel (FDM)", "mfcc": "FD MFCC", "codec_latents": "FD codec latents (FDD)"}


def encoder_choice(name: str, registry, recipe=None):
    """The recipe choice that builds the audio encoder ``name``: ``codec_latents`` wraps the
    recipe's codec; an encoder the recipe's ``audio_encoder`` slot uses takes the slot's options
    (BEATs with its weights file, say), except ``mel``, which keeps its defaults so that FDM
    compares across recipes; any other encoder takes its defaults."""
    from v2a.recipe import ComponentChoice

    options: dict[str, Any] = {}
    if recipe is not None and name == "codec_latents":
        options = {"codec": recipe.choice("codec").as_data()}
    elif recipe is not None and name != "mel" and recipe.has("audio_encoder"):
        own = recipe.choice("audio_encoder")
        if own.plugin == name:
            return own
    return ComponentChoice(kind="audio_encoder", plugin=name, options=options,
                           config=registry.config_for("audio_encoder", name, options))


def build_features(names: list[str], recipe, device: torch.device, notes: list[str]
                   ) -> list[FrameFeatures]:
    """The Fréchet distances asked for, their encoders built as training builds them (frozen,
    fixed seed); encoders shared where two distances read the same one (mel and MFCC)."""
    from v2a.registry import default_registry

    registry = default_registry()
    known = registry.names("audio_encoder")
    derived = {"mfcc": "mel"} if "mfcc" not in known else {}
    for name in names:
        if name not in known and name not in derived:
            raise EvaluationOptionError(
                f"--encoders names {name!r}, which is not a registered audio encoder; the "
                f"registered ones are {', '.join(known) or 'none'}, and mfcc (from mel)"
            )
    built: dict[str, Any] = {}
    features = []
    for name in names:
        if name == "codec_latents" and (recipe is None or not recipe.has("codec")):
            notes.append("FD codec latents (FDD) skipped: it needs the codec of a --recipe")
            continue
        base = derived.get(name, name)
        if base not in built:
            if base not in known:
                raise EvaluationOptionError(f"mfcc is computed from the {base!r} audio encoder, "
                                            "which is not registered")
            choice = encoder_choice(base, registry, recipe)
            built[base] = (build_frozen(choice).to(device), choice.as_data())
        encoder, options = built[base]
        codec = getattr(encoder, "codec", None) if base == "codec_latents" else None
        features.append(FrameFeatures(
            name=name, label=LABELS.get(name, f"FD {name}"), encoder=encoder, options=options,
            channels=int(codec.channels) if codec is not None else 1,
            transform=mfcc if name in derived else None,
        ))
    return features


def frames_of(encoder, wav: Tensor, device: torch.device) -> np.ndarray:
    """The encoder's frames ``[t, d]`` (float64) of one waveform ``[c, n]``."""
    seq = encoder.encode(wav[None].to(device))
    values = seq.values[0]
    if seq.mask is not None:
        values = values[seq.mask[0]]
    return values.double().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Synthetic benchmark
# ---------------------------------------------------------------------------------------------


def truth_by_stem(events_path: Path) -> dict[str, list[Event]]:
    """Stem → ground-truth events, from ``events.jsonl`` (keyed by the manifest's clip ids) and
    the ``manifest.csv`` beside it: a clip's stem is its video's, and a clip of the manifest
    without events has none. Without a manifest a clip id is taken as the video's path. Clips
    that start inside their video are left out with a warning (whole-video audio cannot be
    scored against them)."""
    from v2a.data import read_manifest
    from v2a.synth import read_events

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


def matched(score: dict) -> int:
    """Matched onsets of a :func:`v2a.synth.score_clip` result (``F1 = 2 · matched / (detected +
    events)``)."""
    return round(score["onset_f1"] * (score["detected"] + score["events"]) / 2)


def summarise_onsets(scores: list[dict]) -> dict[str, float]:
    """Mean onset F1 over the clips; offset (ms) and class accuracy pooled over matched onsets."""
    hits = [matched(s) for s in scores]
    total = sum(hits)

    def pooled(key: str, scale: float = 1.0) -> float:
        if not total:
            return float("nan")
        return scale * sum(s[key] * h for s, h in zip(scores, hits) if h) / total

    return {
        "onset_f1": float(np.mean([s["onset_f1"] for s in scores])),
        "onset_offset_ms": pooled("onset_offset", 1000.0),
        "class_accuracy": pooled("class_accuracy"),
        "clips": len(scores), "matched": total,
        "detected": sum(s["detected"] for s in scores), "events": sum(s["events"] for s in scores),
    }


def through_codec(codec, wav: Tensor, device: torch.device) -> Tensor:
    """``wav [c, n]`` encoded and decoded by ``codec`` (same length)."""
    with torch.inference_mode():
        codes = codec.encode(wav[None].to(device))
        return codec.decode(codes, length=wav.shape[1])[0].float().cpu()


# ---------------------------------------------------------------------------------------------
# Sync score (the recipe's reranker)
# ---------------------------------------------------------------------------------------------


class SyncScorer:
    """The recipe's reranker and the visual encoders it reads, scoring one audio against its
    video; the video streams are built by :func:`v2a.features.encode_video`, as for reranking at
    generation time."""

    def __init__(self, recipe, reranker, encoders: dict, device: torch.device):
        self.reranker = reranker.to(device)
        self.plugin = recipe.choice("reranker").plugin
        self.sample_rate = int(reranker.sample_rate)
        self.encoders = {name: encoder.to(device) for name, encoder in encoders.items()}
        self.device = device

    @torch.inference_mode()
    def streams(self, video: Path, seconds: float) -> dict:
        from v2a.media import MediaError, probe

        try:
            info = probe(video)
            length = info.video_duration or info.duration or seconds
            return encode_video(self.encoders, video, min(seconds, length), device=self.device)
        except MediaError as exc:
            raise EvaluationError(str(exc)) from None

    @torch.inference_mode()
    def score(self, wav: Tensor, streams: dict) -> float:
        """Score of ``wav [c, n]`` (at :attr:`sample_rate`) against the video ``streams``."""
        video = {name: streams[name] for name in self.reranker.video_streams}
        candidates = wav[None, None].to(self.device)  # [1, 1, c, n]
        return float(self.reranker.score(candidates, video)[0, 0])

    def score_pair(self, audio: PairAudio, video: Path) -> dict[str, float]:
        """Scores of both sides of a pair against their video."""
        gen, ref = audio.get(self.sample_rate)
        streams = self.streams(video, gen.shape[1] / self.sample_rate)
        return {"generated": self.score(gen, streams), "reference": self.score(ref, streams)}

    def summary(self, scores: list[dict[str, float]]) -> dict[str, Any] | None:
        """Mean score of each side over the clips; None without any."""
        if not scores:
            return None
        return {"reranker": self.plugin, "clips": len(scores),
                **{side: float(np.mean([s[side] for s in scores])) for side in scores[0]}}


def build_sync_scorer(recipe, checkpoint: Path | None, device: torch.device,
                      notes: list[str]) -> SyncScorer | None:
    """A :class:`SyncScorer` for the recipe's reranker, or None (with a note saying why): the
    reranker must be trained (``weights`` not ``none``, or ``scav.safetensors`` in the
    checkpoint run folder, which then becomes its ``weights``)."""
    from v2a.weights import is_random

    if recipe is None or not recipe.has("reranker"):
        return None
    choice = recipe.choice("reranker")
    if choice.plugin == "none":
        notes.append("sync score skipped: the recipe's reranker is 'none', which scores nothing")
        return None
    trained = checkpoint / "scav.safetensors" if checkpoint is not None else None
    if trained is not None and not trained.is_file():
        notes.append(f"{checkpoint} holds no scav.safetensors, so the reranker keeps the weights "
                     "its recipe gives it")
        trained = None
    has_weights = dataclasses.is_dataclass(choice.config) and hasattr(choice.config, "weights")
    if has_weights and trained is not None:
        choice = dataclasses.replace(
            choice, config=dataclasses.replace(choice.config, weights=str(trained)))
    elif has_weights and is_random(choice.config.weights):
        notes.append(f"sync score skipped: the reranker {choice.plugin!r} is untrained (weights: "
                     "none); give --checkpoint RUN holding scav.safetensors, or reranker.weights=FILE")
        return None
    reranker = build_frozen(choice)
    encoders = {}
    for name in reranker.video_streams:
        slot = f"visual_encoders.{name}"
        if not recipe.has(slot):
            notes.append(f"sync score skipped: the reranker reads the visual stream {name!r}, which "
                         "no visual encoder of the recipe provides")
            return None
        encoders[name] = build_frozen(recipe.choice(slot))
    return SyncScorer(recipe, reranker, encoders, device)


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------


@dataclass
class Options:
    """What to evaluate and how (the command's options)."""

    generated: Path
    reference: Path
    videos: Path | None = None  # None: the reference folder
    events: Path | None = None  # None: REF/events.jsonl when it exists
    recipe: str | None = None
    checkpoint: Path | None = None
    overrides: list[str] = field(default_factory=list)
    recipe_options: dict = field(default_factory=dict)  # load_recipe's flags (v2a.recipe.recipe_options)
    encoders: list[str] = field(default_factory=lambda: DEFAULT_ENCODERS.split(","))
    tolerance: float = 0.05
    plots: Path | None = None  # the folder to write one PNG per clip into
    device: str = "cpu"


def check_options(options: Options) -> None:
    if not 0 < options.tolerance < 1:
        raise EvaluationOptionError(f"--tolerance is in seconds, between 0 and 1, got "
                                    f"{options.tolerance:g}")
    if options.checkpoint is not None and options.recipe is None:
        raise EvaluationOptionError("--checkpoint needs the --recipe it was trained with")
    if options.overrides and options.recipe is None:
        raise EvaluationOptionError(f"recipe overrides ({options.overrides[0]}) need --recipe")
    if options.checkpoint is not None and not options.checkpoint.is_dir():
        raise EvaluationOptionError(f"the checkpoint {options.checkpoint} is not a training run folder")
    if options.plots is not None and importlib.util.find_spec("matplotlib") is None:
        raise EvaluationOptionError("--plots needs matplotlib, which is not installed; install it "
                                    "with: pip install 'v2a[plots]'")


def ground_truth(options: Options, pairs: list[Pair]) -> dict[str, list[Event]]:
    """Stem → events from ``--events`` (or ``REF/events.jsonl``), empty without."""
    path = options.events
    if path is None and (options.reference / "events.jsonl").is_file():
        path = options.reference / "events.jsonl"
    elif path is not None and not path.is_file():
        raise EvaluationError(f"the events file {path} does not exist")
    truth = truth_by_stem(path) if path is not None else {}
    if truth and not any(p.stem in truth for p in pairs):
        warn(f"no clip of {path} is among the pairs; the synthetic metrics are left out")
    return truth


def add_frames(features: list[FrameFeatures], audio: PairAudio, device: torch.device) -> None:
    """Both sides' frames of one pair into each distance's statistics (one encoder pass per
    encoder, shared by the distances that read it)."""
    outputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with torch.inference_mode():
        for feat in features:
            key = id(feat.encoder)
            if key not in outputs:
                gen, ref = audio.get(int(feat.encoder.sample_rate), feat.channels)
                outputs[key] = (frames_of(feat.encoder, gen, device),
                                frames_of(feat.encoder, ref, device))
            gen_frames, ref_frames = outputs[key]
            if feat.transform is not None:
                gen_frames, ref_frames = feat.transform(gen_frames), feat.transform(ref_frames)
            feat.generated.add(gen_frames)
            feat.reference.add(ref_frames)


def score_onsets(audio: PairAudio, events: list[Event], tolerance: float, codec,
                 device: torch.device, wrong_events: list[Event] | None = None) -> dict[str, dict]:
    """:func:`v2a.synth.score_clip` of the generated audio, of the generated audio against
    ``wrong_events`` (another clip's: the control), of the reference and (with ``codec``) of
    the reference through the codec, each with its count of matched onsets."""
    from v2a.synth import score_clip

    gen, ref = audio.get(ONSET_RATE)
    scores = {"generated": score_clip(gen.numpy(), ONSET_RATE, events, tolerance)}
    if wrong_events is not None:
        scores["generated_wrong_video"] = score_clip(gen.numpy(), ONSET_RATE, wrong_events, tolerance)
    scores["reference"] = score_clip(ref.numpy(), ONSET_RATE, events, tolerance)
    if codec is not None:
        rate = int(codec.sample_rate)
        decoded = through_codec(codec, audio.get(rate, int(codec.channels))[1], device)
        scores["reference_via_codec"] = score_clip(decoded.numpy(), rate, events, tolerance)
    for score in scores.values():
        score["matched"] = matched(score)
    return scores


def ceiling_codec(recipe, features: list[FrameFeatures], device: torch.device):
    """The recipe's codec (the FDD encoder's own when there is one), or None."""
    if recipe is None or not recipe.has("codec"):
        return None
    latents = next((f.encoder for f in features if f.name == "codec_latents"), None)
    if latents is not None:
        return latents.codec

    return build_frozen(recipe.choice("codec")).to(device)


def evaluate(options: Options, progress: bool = False) -> dict[str, Any]:
    """Score the generated folder against the reference folder; returns the results (the JSON
    layout of ``results.json``, less the command line and options)."""
    from tqdm import tqdm

    from v2a.synth import detect_onsets

    check_options(options)
    device = torch.device(options.device)
    pairs, only_generated, only_reference = pair_folders(options.generated, options.reference)
    if only_generated:
        warn(f"{len(only_generated)} generated clips have no reference in {options.reference} "
             f"(e.g. {only_generated[0]!r}) and are left out")
    if only_reference:
        warn(f"{len(only_reference)} references have no generated clip in {options.generated} "
             f"(e.g. {only_reference[0]!r}) and are left out")
    truth = ground_truth(options, pairs)
    recipe = None
    if options.recipe is not None:
        from v2a.recipe import load_recipe

        recipe = load_recipe(options.recipe, options.overrides, **options.recipe_options)
    notes: list[str] = []
    features = build_features(options.encoders, recipe, device, notes)
    sync = build_sync_scorer(recipe, options.checkpoint, device, notes)
    codec = ceiling_codec(recipe, features, device) if truth else None
    videos = options.videos or options.reference
    # the control: each clip's generated audio against the events of the previous clip's video
    scored = [p.stem for p in pairs if p.stem in truth]
    wrong = {stem: scored[i - 1] for i, stem in enumerate(scored)} if len(scored) > 1 else {}

    clips: dict[str, dict[str, Any]] = {}
    no_video, mismatched = [], []
    quiet = not progress or len(pairs) < 2
    for pair in tqdm(pairs, desc="evaluating", unit="clip", disable=True if quiet else None):
        audio = PairAudio(pair)
        gen, ref = audio.get(ONSET_RATE)  # mono, for onsets and plots
        gen_seconds, ref_seconds = audio.seconds
        if abs(gen_seconds - ref_seconds) > LENGTH_WARNING:
            mismatched.append(pair.stem)
        clips[pair.stem] = clip = {
            "generated": str(pair.generated), "reference": str(pair.reference),
            "seconds": min(gen_seconds, ref_seconds), "seconds_generated": gen_seconds,
            "seconds_reference": ref_seconds}
        add_frames(features, audio, device)
        if pair.stem in truth:
            clip["onsets"] = score_onsets(
                audio, truth[pair.stem], options.tolerance, codec, device,
                wrong_events=truth[wrong[pair.stem]] if pair.stem in wrong else None)
            if pair.stem in wrong:
                clip["wrong_video"] = wrong[pair.stem]
        video = find_video(videos, pair.stem) if sync is not None else None
        if sync is not None and video is None:
            no_video.append(pair.stem)
        elif video is not None:
            clip["video"] = str(video)
            clip["sync"] = sync.score_pair(audio, video)
        if options.plots is not None:
            plot_clip(options.plots / f"{pair.stem}.png", pair.stem, gen[0].numpy(),
                      ref[0].numpy(), ONSET_RATE,
                      truth=[e.time for e in truth[pair.stem]] if pair.stem in truth else None,
                      f1=clip["onsets"]["generated"]["onset_f1"] if "onsets" in clip else None,
                      detected=(detect_onsets(gen.numpy(), ONSET_RATE),
                                detect_onsets(ref.numpy(), ONSET_RATE)))

    if mismatched:
        warn(f"{len(mismatched)} generated clips differ in length from their reference by more "
             f"than {LENGTH_WARNING:g} s (e.g. {mismatched[0]!r}); they are compared over the "
             "shorter of the two")
    if no_video:
        notes.append(f"{len(no_video)} clips have no video in {videos} and have no sync score")
    for f in features:
        frames = min(f.generated.count, f.reference.count)
        if frames <= f.generated.dim:
            notes.append(f"{f.label} rests on {frames} frames of {f.generated.dim} dimensions: its "
                         "covariances are rank-deficient and the distance is biased upwards; "
                         "evaluate more clips")
    return {
        "counts": {"pairs": len(pairs), "generated_only": only_generated,
                   "reference_only": only_reference,
                   "with_events": sum(p.stem in truth for p in pairs)},
        "frechet": {
            f.name: {"label": f.label, "distance": frechet_of(f.generated, f.reference),
                     "frames_generated": f.generated.count, "frames_reference": f.reference.count,
                     "dim": f.generated.dim, "encoder_rate": float(f.encoder.rate),
                     "sample_rate": int(f.encoder.sample_rate), "encoder": f.options,
                     **({"transform": "mfcc"} if f.transform is mfcc else {})}
            for f in features
        },
        "onsets": summarise_sides([c["onsets"] for c in clips.values() if "onsets" in c],
                                  tolerance=options.tolerance),
        "sync": None if sync is None else sync.summary([c["sync"] for c in clips.values()
                                                        if "sync" in c]),
        "clips": clips, "notes": notes,
    }


def summarise_sides(per_clip: list[dict[str, dict]], tolerance: float) -> dict[str, Any] | None:
    """Each side's :func:`summarise_onsets` over the clips with events; None without any."""
    if not per_clip:
        return None
    return {"tolerance": tolerance, "sample_rate": ONSET_RATE,
            **{side: summarise_onsets([c[side] for c in per_clip]) for side in per_clip[0]}}


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}g}"


#: The table's columns after the metric: (results key, header).
COLUMNS = (("generated", "generated"), ("generated_wrong_video", "generated, wrong video"),
           ("reference", "reference"), ("reference_via_codec", "reference via codec"))


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a markdown table, one row per metric, then the notes."""
    onsets = results["onsets"] or {}
    columns = [(key, head) for key, head in COLUMNS if key in ("generated", "reference") or key in onsets]

    def row(label: str, values: dict[str, Any], note: str) -> list[str]:
        return [label] + [number(values.get(key)) if key in values else "" for key, _ in columns] + [note]

    rows = []
    for fd in results["frechet"].values():
        note = (f"{fd['frames_generated']} vs {fd['frames_reference']} frames of {fd['dim']} dims; "
                "lower is better")
        rows.append(row(fd["label"], {"generated": fd["distance"]}, note))
    if onsets:
        tolerance = f"±{onsets['tolerance'] * 1000:g} ms"
        for key, label, note in (
            ("onset_f1", f"onset F1 ({tolerance})", f"mean over {onsets['generated']['clips']} clips"),
            ("onset_offset_ms", "onset offset (ms)", "mean absolute offset of matched onsets"),
            ("class_accuracy", "class accuracy", "pooled over matched onsets"),
        ):
            rows.append(row(label, {side: onsets[side][key] for side, _ in columns}, note))
    if results["sync"]:
        s = results["sync"]
        rows.append(row(f"sync score ({s['reranker']})",
                        {"generated": s["generated"], "reference": s["reference"]},
                        f"mean over {s['clips']} clips; higher is better"))
    header = ["metric"] + [head for _, head in columns] + ["note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    text += f"\n{results['counts']['pairs']} pairs"
    if onsets:
        text += f", {results['counts']['with_events']} with ground-truth events"
        if "generated_wrong_video" in onsets:
            text += ("; \"generated, wrong video\" scores each clip's generated audio against the "
                     "events of another clip's video (a control: what sync owes to the video)")
    text += ".\n"
    for note in results["notes"]:
        text += f"\nNote: {note}."
    return text + ("\n" if results["notes"] else "")


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def log_spectrogram(wav: np.ndarray, sample_rate: int, n_fft: int = 512, hop: int = 128
                    ) -> np.ndarray:
    """``[frames, n_fft // 2 + 1]`` log power (dB) of a mono waveform, centred frames."""
    x = np.pad(np.asarray(wav, dtype=np.float64), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    return 10 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-10)


def plot_clip(path: Path, stem: str, generated: np.ndarray, reference: np.ndarray,
              sample_rate: int, *, truth: list[float] | None, detected, f1: float | None) -> None:
    """Two spectrograms on one time axis (generated above, reference below), ground-truth event
    times as vertical lines, each side's detected onsets as markers; written atomically."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state

    from v2a.media import atomic_output

    seconds = len(generated) / sample_rate
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    top = sample_rate / 2000
    for ax, wav, onsets, label in zip(axes, (generated, reference), detected,
                                      ("generated", "reference")):
        spec = log_spectrogram(wav, sample_rate)
        ax.imshow(spec.T, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, top),
                  vmin=spec.max() - 80, vmax=spec.max())
        for t in truth or []:
            ax.axvline(t, color="cyan", linewidth=0.8, alpha=0.8)
        ax.plot(onsets, np.full(len(onsets), top * 0.93), "v", color="white", markersize=7)
        ax.set_ylabel(f"{label}\nkHz")
        ax.set_xlim(0, seconds)
    axes[-1].set_xlabel("seconds   (▼ detected onsets" + (", cyan lines: ground-truth events)"
                                                          if truth else ")"))
    fig.suptitle(stem + (f"   onset F1 {f1:.2f}" if f1 is not None else ""))
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
