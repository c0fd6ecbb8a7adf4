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

Onset transfer, generated audio against reference audio, as MMAudio (Cheng et al., CVPR 2025)
reports it on Greatest Hits following CondFoley (Du et al., "Conditional Generation of Audio
from Video via Foley Analogies", CVPR 2023, whose ``eval_onset.py`` defines it): onsets are
detected on both signals, the generated ones weighed by the normalised amplitude around them
and thinned by non-maximum suppression (50 ms), then matched greedily within 0.1 s.

* **Onset accuracy** (:func:`onset_accuracy`): the share of the reference's onsets matched.
* **Onset AP** (:func:`onset_average_precision`): average precision of the generated onsets'
  confidences, each reference onset a positive (scored 0 when unmatched).
* **Onset count match** (``onset_count_match`` of :func:`score_onset_transfer`): whether both
  signals have as many onsets; CondFoley prints it as "#onset acc". MMAudio's papers name their
  columns "accuracy" and "AP" without saying which accuracy; :func:`onset_accuracy` is taken to
  be CondFoley's detection accuracy (assumed). Per set (:func:`summarise_onset_transfer`): the
  means over clips. CondFoley detects onsets with librosa's ``onset_detect`` (``delta=0.3``,
  22.05 kHz); these functions take onsets from any detector (e.g. :func:`detect_onsets`).

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


# -- onset transfer: onset accuracy and onset AP (CondFoley's evaluation, used by MMAudio) ------

TRANSFER_TOLERANCE = 0.1  # seconds: CondFoley's matching window (its ``delta``)
CONFIDENCE_WINDOW = 0.05  # seconds: confidence window half-width and suppression distance


def onset_confidence(wav, sample_rate: int, times, *, window: float = CONFIDENCE_WINDOW
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(peak, confidence)`` of onsets at ``times`` (seconds) in ``wav``: with ``|wav|``
    min-max normalised to [0, 1] over the clip, ``peak`` is its value at each onset's sample and
    ``confidence`` its maximum over the samples ``[s − w, s + w)``, ``w = int(window · rate)``
    (cut at the clip's start, where CondFoley's negative slice start would count from the
    clip's end and usually select nothing)."""
    x = np.abs(mono(wav))
    times = np.asarray(times, dtype=np.float64)
    if len(x) == 0 or len(times) == 0:
        return np.zeros(len(times)), np.zeros(len(times))
    span = float(x.max() - x.min())
    x = (x - x.min()) / span if span > 0 else np.zeros_like(x)
    samples = np.clip(np.round(times * sample_rate).astype(int), 0, len(x) - 1)
    w = int(window * sample_rate)
    confidence = [x[max(0, s - w):s + w].max() if w > 0 else x[s] for s in samples]
    return x[samples], np.asarray(confidence, dtype=np.float64)


def suppress_nearby_onsets(times, confidence, *, window: float = CONFIDENCE_WINDOW
                           ) -> np.ndarray:
    """Indices (in time order) of the onsets kept by non-maximum suppression: the most
    confident first (ties: the earlier), then every onset less than ``window`` seconds from a
    kept one is dropped."""
    times = np.asarray(times, dtype=np.float64)
    kept: list[int] = []
    for i in np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable"):
        if all(abs(times[i] - times[k]) >= window for k in kept):
            kept.append(int(i))
    return np.array(sorted(kept, key=lambda i: times[i]), dtype=int)


def transfer_matches(reference, generated, peak, *, tolerance: float = TRANSFER_TOLERANCE
                     ) -> list[int | None]:
    """For each reference onset in order, the generated onset it claims (an index) or None:
    the unclaimed generated onset less than ``tolerance`` seconds away with the highest
    ``peak`` (ties: the later one). Greedy in the reference's order, as CondFoley matches."""
    free = list(range(len(generated)))
    claims: list[int | None] = []
    for t in reference:
        near = [j for j in free if abs(generated[j] - t) < tolerance]
        if not near:
            claims.append(None)
            continue
        best = max(near, key=lambda j: (peak[j], j))
        claims.append(best)
        free.remove(best)
    return claims


def onset_accuracy(reference, generated, peak=None, *,
                   tolerance: float = TRANSFER_TOLERANCE) -> float:
    """Onset accuracy of one clip: the share, in [0, 1], of the reference's onsets (seconds)
    that claim a generated onset (:func:`transfer_matches`; ``peak`` defaults to equal peaks).
    0.0 when either side has no onsets."""
    if len(reference) == 0 or len(generated) == 0:
        return 0.0
    peak = np.zeros(len(generated)) if peak is None else peak
    claims = transfer_matches(reference, generated, peak, tolerance=tolerance)
    return sum(c is not None for c in claims) / len(reference)


def average_precision(labels, scores) -> float:
    """Average precision of ``scores`` ranking the items whose ``labels`` are 1 first:
    ``Σ_k (R_k − R_{k−1}) · P_k`` over the distinct scores from the highest down, ``P_k`` and
    ``R_k`` the precision and recall of the items scored at least the k-th (ties count
    together; the definition of scikit-learn's ``average_precision_score``). 0.0 without
    positives."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.sum() == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    true_pos = np.cumsum(hits)[last_of_tie]
    retrieved = last_of_tie + 1.0
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * true_pos / retrieved))


def onset_average_precision(reference, generated, confidence, peak=None, *,
                            tolerance: float = TRANSFER_TOLERANCE) -> float:
    """Onset AP of one clip: :func:`average_precision` of the generated onsets' confidences as
    detections of the reference's onsets. Each reference onset is a positive, scored with the
    confidence of the generated onset it claims (:func:`transfer_matches`) or 0 when it claims
    none; each unclaimed generated onset is a negative scored with its confidence. 0.0 when
    either side has no onsets (CondFoley's script gives AP 1 for a generated clip without
    onsets, as all its items are then positives; the later scripts derived from it give 0)."""
    if len(reference) == 0 or len(generated) == 0:
        return 0.0
    peak = np.asarray(confidence) if peak is None else peak
    claims = transfer_matches(reference, generated, peak, tolerance=tolerance)
    labels = [1.0] * len(claims)
    scores = [0.0 if c is None else float(confidence[c]) for c in claims]
    unclaimed = sorted(set(range(len(generated))) - {c for c in claims if c is not None})
    labels += [0.0] * len(unclaimed)
    scores += [float(confidence[j]) for j in unclaimed]
    return average_precision(labels, scores)


def score_onset_transfer(reference_onsets, generated_onsets, generated_wav, sample_rate: int, *,
                         tolerance: float = TRANSFER_TOLERANCE) -> dict:
    """CondFoley's onset evaluation of one clip, from both sides' detected onsets (seconds) and
    the generated waveform: the generated onsets are weighed (:func:`onset_confidence`) and
    thinned (:func:`suppress_nearby_onsets`), then scored — ``onset_accuracy``,
    ``onset_ap`` and ``onset_count_match`` (1.0 when both sides have as many onsets, counted
    before the thinning as CondFoley counts them, else 0.0)."""
    generated = np.asarray(generated_onsets, dtype=np.float64)
    reference = np.asarray(reference_onsets, dtype=np.float64)
    peak, confidence = onset_confidence(generated_wav, sample_rate, generated)
    keep = suppress_nearby_onsets(generated, confidence)
    kept, peak, confidence = generated[keep], peak[keep], confidence[keep]
    return {
        "onset_accuracy": onset_accuracy(reference, kept, peak, tolerance=tolerance),
        "onset_ap": onset_average_precision(reference, kept, confidence, peak,
                                            tolerance=tolerance),
        "onset_count_match": float(len(reference) == len(generated)),
    }


def summarise_onset_transfer(scores: list[dict]) -> dict[str, float]:
    """Means over the clips of :func:`score_onset_transfer`'s values (NaN for no clips)."""
    keys = ("onset_accuracy", "onset_ap", "onset_count_match")
    if not scores:
        return {key: float("nan") for key in keys} | {"clips": 0}
    return {key: float(np.mean([s[key] for s in scores])) for key in keys} | {"clips": len(scores)}
