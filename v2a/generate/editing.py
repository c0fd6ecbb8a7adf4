"""Masked editing: audio kept, stretches of it generated again (``--keep-audio --regenerate``),
or an audio prompt continued (``--audio-prompt``); see docs/editing.md.

A masked generator fills hidden code positions around known ones, so editing needs no model of
its own. The kept audio is encoded once with the codec; every code frame that overlaps a
stretch to regenerate is hidden (all RVQ levels), every other frame is known and never resampled
(:func:`v2a.sampler.sample`'s prompt). After decoding, the output is spliced
(:meth:`AudioEdit.splice`): the kept waveform itself (not the codec's round trip of it) outside
the stretches, the decoded audio inside, and an equal-power crossfade over ``crossfade`` seconds
of the kept side of each seam.

An audio prompt is the same edit: its audio kept from the start of the clip, everything after
its end regenerated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from v2a.generate.errors import GenerationError
from v2a.generate.windows import WINDOW_TOLERANCE
from v2a.interfaces import AudioCodec, fit_length
from v2a.media import load_audio, resample_audio
from v2a.sampler import Prompt

#: Seconds of the kept side of each seam over which the kept audio fades into the generated.
DEFAULT_CROSSFADE = 0.02

#: A stretch of the clip, ``(start, end)`` seconds from the clip's start.
Stretch = tuple[float, float]


# -- stretches ----------------------------------------------------------------------------------


def parse_stretches(text: str) -> list[Stretch]:
    """``"2.0-3.5,5-6"`` → ``[(2.0, 3.5), (5.0, 6.0)]``, refused in one sentence when it is not
    ``START-END`` pairs of seconds separated by commas (order and overlap are checked by
    :func:`check_stretches`)."""
    stretches = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            stretches.append((float(first), float(last)))
        except ValueError:
            raise GenerationError(f"--regenerate takes stretches START-END in seconds separated by "
                                  f"commas (e.g. 2.0-3.5,5-6), not {text!r}") from None
        if not dash:
            raise GenerationError(f"--regenerate takes stretches START-END in seconds separated by "
                                  f"commas (e.g. 2.0-3.5,5-6), not {text!r}")
    return stretches


def check_stretches(stretches, duration: float | None = None) -> tuple[Stretch, ...]:
    """``stretches`` sorted by start, each ending after it starts and none overlapping another
    (touching is fine), all inside ``[0, duration]`` s when ``duration`` is given (an end up to
    :data:`~v2a.generate.windows.WINDOW_TOLERANCE` past it is taken as the end); refused in one
    sentence otherwise."""
    if not stretches:
        raise GenerationError("--regenerate needs at least one stretch START-END in seconds")
    found = sorted((float(a), float(b)) for a, b in stretches)
    for a, b in found:
        if not b > a:
            raise GenerationError(f"the stretch {a:g}-{b:g} s to regenerate ends before it starts; "
                                  "give START-END with END after START")
        if a < 0:
            raise GenerationError(f"the stretch {a:g}-{b:g} s to regenerate starts before the "
                                  "clip; stretches are seconds from the clip's start")
        if duration is not None and b > duration + WINDOW_TOLERANCE:
            raise GenerationError(f"the stretch {a:g}-{b:g} s to regenerate ends after the clip "
                                  f"({duration:.2f} s); stretches are seconds from its start")
    for (a0, b0), (a1, b1) in zip(found, found[1:]):
        if a1 < b0:
            raise GenerationError(f"the stretches {a0:g}-{b0:g} s and {a1:g}-{b1:g} s to "
                                  "regenerate overlap; join them into one")
    if duration is not None:
        found = [(a, min(b, duration)) for a, b in found]
    return tuple(found)


def stretch_frames(stretch: Stretch, frame_rate: float, total: int) -> tuple[int, int]:
    """The code frames ``[first, last)`` of ``total`` that overlap ``stretch`` (frame ``i``
    lasts from ``i / frame_rate`` to ``(i + 1) / frame_rate`` s): every frame that holds part
    of the stretch, so a frame only touching it at one end is left out."""
    a, b = stretch
    first = math.floor(a * frame_rate + 1e-9)  # the tolerance absorbs seconds·rate rounding
    last = math.ceil(b * frame_rate - 1e-9)
    return max(0, min(first, total)), max(0, min(last, total))


def stretch_samples(stretch: Stretch, sample_rate: int, length: int) -> tuple[int, int]:
    """The samples ``[first, last)`` of ``length`` that ``stretch`` covers."""
    a, b = stretch
    return min(length, round(a * sample_rate)), min(length, round(b * sample_rate))


# -- the kept audio ------------------------------------------------------------------------------


def match_channels(wav: Tensor, channels: int, what: str) -> Tensor:
    """``wav [c, n]`` (or ``[n]``, mono) with ``channels`` channels: the mean of its channels for
    mono, a mono track repeated for more; other mismatches are refused in one sentence."""
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise GenerationError(f"{what} must be a waveform [channels, samples], not a tensor of "
                              f"shape {list(wav.shape)}")
    if wav.shape[0] == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=0, keepdim=True)
    if wav.shape[0] == 1:
        return wav.expand(channels, -1)
    raise GenerationError(f"{what} has {wav.shape[0]} channels and the codec {channels}; give "
                          f"mono audio or {channels} channels")


def read_audio(audio: Tensor | str | Path, *, sample_rate: int, channels: int, what: str,
               audio_rate: int | None, start: float = 0.0,
               duration: float | None = None) -> Tensor:
    """``audio`` as float32 ``[channels, n]`` at ``sample_rate``: a file's first audio track
    (from ``start`` for ``duration`` s when given), or a waveform ``[c, n]`` at ``audio_rate``
    (default ``sample_rate``), resampled with :func:`v2a.media.resample_audio`."""
    if isinstance(audio, (str, Path)):
        return load_audio(audio, sample_rate=sample_rate, channels=channels, start=start,
                          duration=duration)
    if not isinstance(audio, Tensor) or not audio.is_floating_point():
        raise GenerationError(f"{what} is a file's path or a float waveform [channels, samples], "
                              f"not {type(audio).__name__}")
    wav = match_channels(audio.detach().float().cpu(), channels, what)
    rate = sample_rate if audio_rate is None else int(audio_rate)
    return resample_audio(wav, rate, sample_rate) if rate != sample_rate else wav.clone()


# -- the edit -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AudioEdit:
    """What to keep of a clip's sound: ``kept`` float32 ``[c, n]`` at the codec's rate (sample 0
    at the clip's start), the ``regenerate`` stretches (sorted, not overlapping, seconds from
    the clip's start) and the ``crossfade`` seconds at each seam. The values of ``kept`` inside
    the stretches are never heard."""

    kept: Tensor
    regenerate: tuple[Stretch, ...]
    crossfade: float = DEFAULT_CROSSFADE

    def known_frames(self, frame_rate: float, total: int) -> Tensor:
        """``[total]`` bool: True for the code frames that overlap no stretch (kept)."""
        known = torch.ones(total, dtype=torch.bool)
        for stretch in self.regenerate:
            first, last = stretch_frames(stretch, frame_rate, total)
            known[first:last] = False
        return known

    def prompt(self, codec: AudioCodec, total: int, device: str | torch.device = "cpu") -> Prompt:
        """The kept audio encoded once by ``codec``: ``Prompt(codes, known)``, both
        ``[1, k, total]`` on the CPU, ``known`` True at every level of the kept frames
        (:meth:`known_frames`). The codes of hidden frames are the kept audio's, ignored."""
        codes = codec.encode(self.kept[None].to(device)).cpu().long()  # [1, k, l]
        codes = fit_length(codes, total)  # l = num_frames(n) = total, kept as a guard
        known = self.known_frames(float(codec.frame_rate), total)
        return Prompt(codes, known.expand(1, codes.shape[1], total).clone())

    def seam_angle(self, sample_rate: int) -> Tensor:
        """``[n]`` float64: the angle ``phi`` of each sample, the output being ``kept · cos phi +
        generated · sin phi``: ``pi / 2`` inside the stretches; at ``d`` samples from the
        nearest stretch, ``pi / 2 · clamp(1 - (d - 1/2) / r, 0, 1)`` with ``r = round(crossfade
        · sample_rate)`` (so 0, the kept audio alone, beyond ``r`` samples; with ``r = 0`` a hard
        cut)."""
        n = self.kept.shape[-1]
        position = torch.arange(n, dtype=torch.float64)
        distance = torch.full((n,), math.inf, dtype=torch.float64)
        for stretch in self.regenerate:
            first, last = stretch_samples(stretch, sample_rate, n)
            if last <= first:
                continue
            away = torch.where(position < first, first - position,
                               (position - (last - 1)).clamp(min=0))
            distance = torch.minimum(distance, away)
        ramp = round(self.crossfade * sample_rate)
        if ramp == 0:
            return torch.where(distance == 0, math.pi / 2, 0.0).double()
        inside = torch.where(distance == 0, 1.0, 1.0 - (distance - 0.5) / ramp)
        return math.pi / 2 * inside.clamp(0.0, 1.0)

    def splice(self, generated: Tensor, sample_rate: int) -> Tensor:
        """The output ``[c, n]``: ``generated`` (the decoded codes, ``[c, n]``) inside the
        stretches, ``kept`` itself, sample for sample, more than ``crossfade`` s from them, and
        ``kept · cos phi + generated · sin phi`` (:meth:`seam_angle`, float32
        arithmetic) in between."""
        phi = self.seam_angle(sample_rate)
        kept = self.kept.to(generated)
        mixed = kept * torch.cos(phi).to(kept.dtype) + generated * torch.sin(phi).to(kept.dtype)
        out = torch.where(phi == 0, kept, mixed)  # exact where only one of them is heard
        return torch.where(phi == math.pi / 2, generated, out)


def check_edit_options(*, keep_audio: bool, regenerate: bool, audio_prompt: bool,
                       crossfade: float) -> None:
    """Refuse, in one sentence, editing options that do not go together: ``regenerate``
    without ``keep_audio`` and the reverse (keeping everything would generate nothing),
    ``keep_audio`` with ``audio_prompt``, a negative ``crossfade``."""
    if keep_audio and audio_prompt:
        raise GenerationError("--keep-audio and --audio-prompt both give the audio to keep; give "
                              "one of them")
    if regenerate and not keep_audio:
        raise GenerationError("--regenerate needs --keep-audio: the stretches are regenerated "
                              "in the kept audio")
    if keep_audio and not regenerate:
        raise GenerationError("--keep-audio keeps the whole clip unless --regenerate names the "
                              "stretches to generate again (e.g. --regenerate 2.0-3.5)")
    if not crossfade >= 0:
        raise GenerationError(f"--crossfade must be zero or more seconds, got {crossfade:g}")


def plan_edit(*, keep_audio=None, regenerate=None, audio_prompt=None,
              audio_rate: int | None = None, crossfade: float = DEFAULT_CROSSFADE,
              start: float, duration: float, sample_rate: int, channels: int
              ) -> AudioEdit | None:
    """The :class:`AudioEdit` that :meth:`VideoToAudio.generate`'s editing arguments ask for on
    the clip ``[start, start + duration]`` s, or None without any.

    ``keep_audio`` (a file's audio from ``start`` for ``duration`` s, or a waveform of the clip
    at ``audio_rate``, within :data:`WINDOW_TOLERANCE` of its length) with the ``regenerate``
    stretches (:func:`check_stretches`); or ``audio_prompt`` (a file's whole audio, or a
    waveform), kept from the clip's start, shorter than the clip, the rest regenerated. Options
    that do not go together are refused by :func:`check_edit_options`."""
    check_edit_options(keep_audio=keep_audio is not None, regenerate=bool(regenerate),
                       audio_prompt=audio_prompt is not None, crossfade=crossfade)
    if keep_audio is None and audio_prompt is None:
        return None
    n = round(duration * sample_rate)
    if keep_audio is not None:
        stretches = check_stretches(regenerate, duration)
        kept = read_audio(keep_audio, sample_rate=sample_rate, channels=channels,
                          what="the audio to keep", audio_rate=audio_rate, start=start,
                          duration=duration)
        if abs(kept.shape[-1] - n) > WINDOW_TOLERANCE * sample_rate:
            raise GenerationError(f"the audio to keep lasts {kept.shape[-1] / sample_rate:.2f} s "
                                  f"but the clip {duration:.2f} s; give the clip's own audio")
        return AudioEdit(kept=fit_length(kept, n), regenerate=stretches, crossfade=crossfade)
    prompt = read_audio(audio_prompt, sample_rate=sample_rate, channels=channels,
                        what="the audio prompt", audio_rate=audio_rate)
    if prompt.shape[-1] == 0:
        raise GenerationError(f"the audio prompt {audio_prompt} holds no audio"
                              if isinstance(audio_prompt, (str, Path)) else
                              "the audio prompt holds no samples")
    if prompt.shape[-1] >= n:
        raise GenerationError(f"the audio prompt lasts {prompt.shape[-1] / sample_rate:.2f} s, "
                              f"not less than the {duration:.2f} s clip; give a shorter prompt "
                              "or a longer clip")
    return AudioEdit(kept=fit_length(prompt, n), regenerate=((prompt.shape[-1] / sample_rate,
                                                              duration),), crossfade=crossfade)
