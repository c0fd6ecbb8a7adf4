"""Metrics that score each generated clip against its own reference clip, with no model:
NS, the novelty-curve correlation (:func:`v2a.metrics.novelty.novelty_score`, MaskVAT's), and
onset accuracy and AP (:func:`v2a.metrics.onsets.score_onset_transfer`, CondFoleyGen's onset
evaluation as MMAudio reports it: the reference's detected onsets are the targets). Both are
computed at :data:`RATE` on mono audio; the set's value is the mean over the pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from v2a.evaluate.pairing import PairAudio
from v2a.evaluate.provenance import NO_WEIGHTS
from v2a.metrics.novelty import FUNCTIONS, MAX_LAG_SECONDS, novelty_score
from v2a.metrics.onsets import TRANSFER_TOLERANCE, detect_onsets, score_onset_transfer

RATE = 16000  #: sample rate (Hz) of NS and the onset transfer scores

NOVELTY_MODEL = {"plugin": "v2a.metrics.novelty", "options": {"function": FUNCTIONS[0]},
                 "weights": NO_WEIGHTS}
NOVELTY_SETTINGS = {"sample_rate": RATE, "function": FUNCTIONS[0],
                    "max_lag_seconds": MAX_LAG_SECONDS}
TRANSFER_MODEL = {"plugin": "v2a.metrics.onsets", "options": {"detector": "spectral flux"},
                  "weights": NO_WEIGHTS}
TRANSFER_SETTINGS = {"sample_rate": RATE, "tolerance": TRANSFER_TOLERANCE}


def novelty_of(audio: PairAudio) -> float:
    """NS of one pair."""
    gen, ref = audio.get(RATE)
    return novelty_score(gen[0].numpy(), ref[0].numpy(), RATE, function=FUNCTIONS[0],
                         max_lag_seconds=MAX_LAG_SECONDS)


def onset_transfer_of(audio: PairAudio) -> dict[str, float]:
    """Onset accuracy, AP and count match of one pair: the generated onsets against the
    reference's detected onsets."""
    gen, ref = audio.get(RATE)
    return score_onset_transfer(detect_onsets(ref.numpy(), RATE), detect_onsets(gen.numpy(), RATE),
                                gen.numpy(), RATE, tolerance=TRANSFER_TOLERANCE)


def mean_of(clips: dict[str, dict[str, Any]], key: str, field: str | None = None) -> float | None:
    """The mean over the clips of ``clip[key]`` (or ``clip[key][field]``), None without any."""
    values = [c[key] if field is None else c[key][field] for c in clips.values() if key in c]
    return float(np.mean(values)) if values else None
