"""Pairing generated files with references by stem, and decoding both sides of a pair.

Every audio file of the folder GENERATED (``<stem>.wav``/``.flac``/...; a stem with only a
video, ``<stem>.mp4``, gives its audio track) is paired with the reference of the same stem in
REF: an audio file ``REF/<stem>.wav``, or the audio track of ``REF/<stem>.mp4``. A stem
``<stem>.v2a`` (what ``v2a generate`` writes beside a video without ``-o``) counts as ``<stem>``.
Both sides are compared over their common length (a clip generated for a video lasts as long as
the video, so they should match). Without a reference folder (reference-free evaluation) every
generated stem is a "pair" of one side, whose reference is None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from v2a.evaluate.options import EvaluationError
from v2a.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES, MediaError, load_audio, probe

GENERATE_SUFFIX = ".v2a"  # `v2a generate` without -o writes <stem>.v2a.wav beside the video
LENGTH_WARNING = 0.1  # seconds two sides of a pair may differ before a warning


@dataclass(frozen=True)
class Pair:
    stem: str
    generated: Path
    reference: Path | None  # None: reference-free


def stem_of(path: Path) -> str:
    stem = path.stem
    return stem[: -len(GENERATE_SUFFIX)] if stem.endswith(GENERATE_SUFFIX) else stem


def audio_sources(folder: Path) -> dict[str, Path]:
    """Stem → the file holding its audio: an audio file, else a video's audio track; a
    ``<stem>.v2a.*`` file wins over ``<stem>.*``."""

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


def pair_folders(generated: Path, reference: Path | None
                 ) -> tuple[list[Pair], list[str], list[str]]:
    """(pairs by stem, stems only generated, stems only in the reference); without a
    ``reference`` folder, one pair without reference per generated stem."""
    for folder, what in ((generated, "generated audio"), (reference, "reference")):
        if folder is None:
            continue
        if not folder.exists():
            raise EvaluationError(f"the {what} folder {folder} does not exist")
        if not folder.is_dir():
            raise EvaluationError(f"the {what} folder {folder} is a file; give a folder")
    gen = audio_sources(generated)
    if not gen:
        raise EvaluationError(f"the folder {generated} holds no audio or video file to evaluate")
    if reference is None:
        return [Pair(stem, gen[stem], None) for stem in sorted(gen)], [], []
    ref = audio_sources(reference)
    pairs = [Pair(stem, gen[stem], ref[stem]) for stem in sorted(gen.keys() & ref.keys())]
    if not pairs:
        raise EvaluationError(
            f"no file of {generated} has a reference of the same name in {reference} (e.g. "
            f"{sorted(gen)[0]!r}); the audio of <stem> is compared with {reference}/<stem>.wav or .mp4"
        )
    return pairs, sorted(gen.keys() - ref.keys()), sorted(ref.keys() - gen.keys())


def load(path: Path, sample_rate: int, channels: int) -> Tensor:
    """``[channels, n]`` audio of ``path``, a :class:`EvaluationError` when it cannot be read."""
    try:
        return load_audio(path, sample_rate=sample_rate, channels=channels)
    except MediaError as exc:
        try:
            silent = probe(path).has_video and not probe(path).has_audio
        except MediaError:
            silent = False
        if silent:  # e.g. a `v2a synth --silent` folder given as the reference
            raise EvaluationError(f"{path} is a video without sound, so there is no audio to "
                                  "compare; give the folder of the true sound (a `v2a synth` set "
                                  "made without --silent), or leave out --reference to score "
                                  "without one") from None
        raise EvaluationError(str(exc)) from None


class PairAudio:
    """The two sides of a pair, decoded once per (rate, channels) and cut to their common length."""

    def __init__(self, pair: Pair):
        self.pair = pair
        self.seconds: tuple[float, float] | None = None  # (generated, reference) before cutting
        self._decoded: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    def get(self, sample_rate: int, channels: int = 1) -> tuple[Tensor, Tensor | None]:
        """``(generated [c, n], reference [c, n])`` at ``sample_rate``, ``n`` the shorter length;
        the reference is None (and the generated audio whole) without a reference."""
        key = (int(sample_rate), int(channels))
        if key not in self._decoded:
            gen = load(self.pair.generated, *key)
            if self.pair.reference is None:
                self.seconds = self.seconds or (gen.shape[1] / key[0], gen.shape[1] / key[0])
                self._decoded[key] = (gen, None)
                return self._decoded[key]
            ref = load(self.pair.reference, *key)
            if self.seconds is None:
                self.seconds = (gen.shape[1] / key[0], ref.shape[1] / key[0])
            n = min(gen.shape[1], ref.shape[1])
            self._decoded[key] = (gen[:, :n], ref[:, :n])
        return self._decoded[key]


def common_seconds(video: Path, samples: int, sample_rate: int) -> float:
    """The seconds both an audio side (``samples`` at ``sample_rate``) and ``video`` last; a
    video that cannot be probed is an :class:`EvaluationError` of one sentence."""
    try:
        info = probe(video)
    except MediaError as exc:
        raise EvaluationError(str(exc)) from None
    seconds = samples / sample_rate
    return min(seconds, info.video_duration or info.duration or seconds)
