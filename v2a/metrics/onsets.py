"""Onset metrics: when sounds start, and which sound it is, against ground-truth events.

Definitions (``wav`` is ``[n]`` or ``[c, n]``, channels averaged; times in seconds):

* **Onset strength** (:func:`onset_strength`): spectral flux, the sum over frequency bins of the
  positive frame-to-frame increase of the compressed magnitude ``log(1 + C·|X| / Σ window)``,
  Hann windows of :data:`N_FFT` samples at 16 kHz (32 ms, scaled with the rate) every
  :data:`HOP` seconds. Unitless.
* **Onsets** (:func:`detect_onsets`): the frames whose flux is the largest within
  ±:data:`MIN_DISTANCE` s and at least ``max(THRESHOLD · strongest flux, MIN_FLUX)``; seconds.
* **Matching** (:func:`match_onsets`): detected and true onsets paired one to one when they lie
  within ±``tolerance`` seconds (:data:`DEFAULT_TOLERANCE`, 50 ms), closest pairs first.
* **Onset F1** (:func:`onset_f1`): ``2 · matched / (detected + true)``, in [0, 1]; 1 when both
  are empty.
* **Onset offset** (:func:`mean_onset_offset`): mean ``|detected − true|`` over matched pairs,
  seconds (the set summary reports milliseconds).
* **Class accuracy** (:func:`class_accuracy`): the share, in [0, 1], of matched onsets whose
  class — the class whose fundamental frequency is nearest, in log frequency, to the dominant
  frequency just after the onset (:func:`estimate_class`) — is the true event's class. The
  classes are given as ``fundamentals``: class name → fundamental frequency (Hz).
* **Per set** (:func:`summarise_onsets`): onset F1 averaged over clips; offset (ms) and class
  accuracy pooled over all matched onsets of all clips.

NaN marks a value without data (an offset or accuracy with nothing matched).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from v2a.metrics.spectral import hann_frames

N_FFT = 512  # samples at 16 kHz: 32 ms windows (scaled with the sample rate)
HOP = 0.004  # seconds between analysis frames
COMPRESSION = 100.0  # log(1 + C * |X|) magnitude compression
THRESHOLD = 0.15  # a peak must reach this fraction of the clip's strongest flux ...
MIN_FLUX = 0.5  # ... and this absolute flux (a silent or near-silent clip has no onsets)
MIN_DISTANCE = 0.08  # seconds between two detected onsets (the stronger one wins)
DEFAULT_TOLERANCE = 0.05  # seconds a detected onset may lie from a true one and still match


class LabelledEvent(Protocol):
    """A true event: when it happens and what class of sound it makes (e.g.
    :class:`v2a.synth.Event`)."""

    @property
    def time(self) -> float: ...  # seconds into the clip

    @property
    def cls(self) -> str: ...  # the class's name, a key of ``fundamentals``


def mono(wav) -> np.ndarray:
    """``wav`` ``[n]`` or ``[c, n]`` as a float64 ``[n]`` (channels averaged)."""
    wav = np.asarray(wav, dtype=np.float64)
    return wav.mean(axis=0) if wav.ndim == 2 else wav


def onset_strength(wav, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral flux of ``wav`` (``[n]`` or ``[c, n]``): (frame times s, flux per frame).

    Hann windows of ``N_FFT * sample_rate / 16000`` samples every :data:`HOP` s, magnitudes
    compressed as ``log(1 + COMPRESSION * |X| / window sum)``, flux = sum over bins of the
    positive frame-to-frame increase. Frame times are the windows' right edges minus a quarter
    window (where a sharp onset's flux peaks), so times are not late by half a window.
    """
    n_fft = max(64, round(N_FFT * sample_rate / 16000))
    hop = max(1, round(HOP * sample_rate))
    frames = hann_frames(mono(wav), n_fft, hop, pad=n_fft)
    starts = hop * np.arange(len(frames))  # in the padded signal
    mag = np.log1p(COMPRESSION * np.abs(np.fft.rfft(frames, axis=1)) / np.hanning(n_fft).sum())
    flux = np.maximum(0.0, np.diff(mag, axis=0)).sum(axis=1)
    times = (starts[1:] + n_fft * 0.75) / sample_rate - n_fft / sample_rate
    return times, flux


def detect_onsets(wav, sample_rate: int, *, threshold: float = THRESHOLD,
                  min_flux: float = MIN_FLUX, min_distance: float = MIN_DISTANCE) -> np.ndarray:
    """Onset times (seconds, increasing) of ``wav`` by spectral flux and peak picking.

    A frame is an onset when its flux is the maximum within ±``min_distance`` seconds and at
    least ``max(threshold * strongest flux, min_flux)``. Parameters: see the module constants.
    """
    times, flux = onset_strength(wav, sample_rate)
    if flux.size == 0 or flux.max() <= 0:
        return np.zeros(0)
    floor = max(threshold * flux.max(), min_flux)
    reach = max(1, round(min_distance / HOP))
    padded = np.pad(flux, reach, constant_values=-np.inf)
    local_max = np.lib.stride_tricks.sliding_window_view(padded, 2 * reach + 1).max(axis=1)
    peaks = np.flatnonzero((flux >= floor) & (flux >= local_max))
    kept: list[int] = []
    for p in peaks:  # plateaus: keep the first frame of equal neighbours
        if not kept or p - kept[-1] > reach:
            kept.append(int(p))
    return np.clip(times[kept], 0.0, None)


def match_onsets(detected, truth, tolerance: float = DEFAULT_TOLERANCE) -> list[tuple[int, int]]:
    """One-to-one pairs ``(i_detected, j_truth)`` with ``|detected[i] - truth[j]| <= tolerance``.

    Greedy, closest pairs first (the usual onset-evaluation matching; with events farther apart
    than twice the tolerance it is optimal). Pairs are sorted by ``j``.
    """
    detected, truth = np.asarray(detected, dtype=float), np.asarray(truth, dtype=float)
    candidates = sorted(
        (abs(d - t), i, j) for i, d in enumerate(detected) for j, t in enumerate(truth)
        if abs(d - t) <= tolerance + 1e-9
    )
    used_i, used_j, pairs = set(), set(), []
    for _, i, j in candidates:
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            pairs.append((i, j))
    return sorted(pairs, key=lambda p: p[1])


def onset_f1(detected, truth, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """F1 of detected onsets against true ones (seconds), matched within ±``tolerance``.

    Both empty: 1.0; one empty: 0.0.
    """
    n_d, n_t = len(detected), len(truth)
    if n_d == 0 and n_t == 0:
        return 1.0
    if n_d == 0 or n_t == 0:
        return 0.0
    hits = len(match_onsets(detected, truth, tolerance))
    return 2 * hits / (n_d + n_t)


def mean_onset_offset(detected, truth, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Mean absolute offset (seconds) of the matched pairs; NaN when nothing matches."""
    pairs = match_onsets(detected, truth, tolerance)
    if not pairs:
        return float("nan")
    return float(np.mean([abs(detected[i] - truth[j]) for i, j in pairs]))


def dominant_frequency(wav, sample_rate: int, time: float, *, start: float = 0.01,
                       length: float = 0.06) -> float:
    """The strongest frequency (Hz) of ``wav`` from ``time + start`` for ``length`` seconds."""
    x = mono(wav)
    a = max(0, round((time + start) * sample_rate))
    piece = x[a:a + round(length * sample_rate)]
    if len(piece) < 16:
        return float("nan")
    n = 1 << (max(len(piece), 4096) - 1).bit_length()  # zero padding: fine frequency grid
    spectrum = np.abs(np.fft.rfft(piece * np.hanning(len(piece)), n))
    spectrum[: max(1, round(100 * n / sample_rate))] = 0  # ignore DC and rumble below 100 Hz
    return float(np.argmax(spectrum) * sample_rate / n)


def nearest_class(frequency: float, fundamentals: Mapping[str, float]) -> str:
    """The class whose fundamental is nearest (in semitones) to ``frequency``; ``""`` when the
    frequency is not a positive number. Ties go to the class listed first."""
    if not frequency > 0:
        return ""
    return min(fundamentals, key=lambda name: abs(math.log(frequency / fundamentals[name])))


def estimate_class(wav, sample_rate: int, time: float, *, fundamentals: Mapping[str, float]) -> str:
    """The class of the sound starting at ``time``: :func:`nearest_class` of its
    :func:`dominant_frequency`."""
    return nearest_class(dominant_frequency(wav, sample_rate, time), fundamentals)


def class_accuracy(wav, sample_rate: int, detected, truth: Sequence[LabelledEvent],
                   tolerance: float = DEFAULT_TOLERANCE, *,
                   fundamentals: Mapping[str, float]) -> float:
    """Share of matched detected onsets whose estimated class is the true event's class.

    NaN when no detected onset matches a true one.
    """
    pairs = match_onsets(detected, [e.time for e in truth], tolerance)
    if not pairs:
        return float("nan")
    right = sum(estimate_class(wav, sample_rate, detected[i], fundamentals=fundamentals)
                == truth[j].cls for i, j in pairs)
    return right / len(pairs)


def score_clip(wav, sample_rate: int, truth: Sequence[LabelledEvent],
               tolerance: float = DEFAULT_TOLERANCE, *, fundamentals: Mapping[str, float]) -> dict:
    """Onset F1, mean absolute offset (s) and class accuracy of ``wav`` against ``truth``, with
    the counts of detected onsets and true events."""
    detected = detect_onsets(wav, sample_rate)
    times = [e.time for e in truth]
    return {
        "onset_f1": onset_f1(detected, times, tolerance),
        "onset_offset": mean_onset_offset(detected, times, tolerance),
        "class_accuracy": class_accuracy(wav, sample_rate, detected, truth, tolerance,
                                         fundamentals=fundamentals),
        "detected": len(detected),
        "events": len(truth),
    }


def matched(score: dict) -> int:
    """Matched onsets of a :func:`score_clip` result (``F1 = 2 · matched / (detected +
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
