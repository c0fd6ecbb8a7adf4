"""DeSync: how far, in seconds, a synchronisation classifier finds generated audio shifted
against its video — Synchformer (Iashin et al., "Synchformer: Efficient Synchronization from
Sparse Cues", ICASSP 2024) as av-benchmark (MMAudio's evaluation, Cheng et al., CVPR 2025)
scores it.

* The classifier sees 4.8 s of audio and video and picks one of 21 offsets (:data:`OFFSETS`,
  −2.0 to +2.0 s in 0.2 s steps; positive: the audio comes late).
* Each clip is scored on two segments (:func:`segments`): its first and its last 4.8 s (they
  overlap when the clip is under 9.6 s). A clip of at most 4.8 s has one segment, the whole
  clip: av-benchmark then scores the same features twice, which gives the same mean. How a
  segment shorter than the classifier's window is fed to it (padding, or refusing) is the
  classifier's business.
* A segment's offset is the offset of its highest logit (:func:`offset_of`); a clip's DeSync is
  the mean ``|offset|`` over its segments, and the set's (:func:`desync`) the mean over clips —
  seconds, 0 is in sync, lower is better. As every clip has the same number of segments in
  av-benchmark (two, possibly the same one twice), this equals its mean over all segments.

av-benchmark cuts the segments from Synchformer's feature grid (0.64 s pieces every 0.32 s), so
its "last 4.8 s" can start up to 0.32 s before ``duration − 4.8`` when the clip's length is not
on that grid; :func:`segments` uses the exact times.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The 21 candidate offsets (seconds) of Synchformer's classes, in class order.
OFFSETS: tuple[float, ...] = tuple(round(-2.0 + 0.2 * i, 1) for i in range(21))
WINDOW = 4.8  # seconds of audio and video the classifier sees


def segments(duration: float, *, window: float = WINDOW) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of the segments DeSync scores in a clip of ``duration`` seconds:
    ``[(0, window), (duration − window, duration)]``, or ``[(0, duration)]`` when
    ``duration <= window``."""
    if not duration > 0:
        raise ValueError(f"a clip's duration must be positive, got {duration}")
    if duration <= window:
        return [(0.0, float(duration))]
    return [(0.0, float(window)), (float(duration - window), float(duration))]


def offset_of(logits: np.ndarray, offsets: Sequence[float] = OFFSETS) -> np.ndarray:
    """The offset (seconds) of the highest logit along the last axis of ``logits``
    ``[..., len(offsets)]`` → ``[...]`` float64; ties go to the first class."""
    logits = np.asarray(logits)
    if logits.shape[-1:] != (len(offsets),):
        raise ValueError(f"offset logits must end in {len(offsets)} classes, got {logits.shape}")
    return np.asarray(offsets, dtype=np.float64)[np.argmax(logits, axis=-1)]


def desync(offsets: Sequence[Sequence[float]]) -> float:
    """DeSync of a set: the mean over clips of the mean ``|offset|`` (seconds) of each clip's
    segments; NaN for no clips."""
    if not offsets:
        return float("nan")
    per_clip = []
    for clip in offsets:
        if len(clip) == 0:
            raise ValueError("a clip has no scored segments")
        per_clip.append(np.mean(np.abs(np.asarray(clip, dtype=np.float64))))
    return float(np.mean(per_clip))
