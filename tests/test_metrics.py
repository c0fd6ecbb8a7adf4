"""The metrics of v2a/metrics/: the Fréchet distance against closed forms, running moments against
numpy, MFCC against a direct DCT, the shared framing and the spectrogram, onset detection,
matching, F1, offset and class accuracy on hand-made audio (tones of `v2a synth`'s classes), and
that the package stays pure (it imports nothing of v2a above the lowest layer)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from v2a.metrics.frechet import Moments, frechet_distance
from v2a.metrics.onsets import (
    class_accuracy,
    detect_onsets,
    estimate_class,
    mean_onset_offset,
    nearest_class,
    onset_f1,
    score_clip,
)
from v2a.metrics.spectral import dct_matrix, hann_frames, log_spectrogram, mfcc
from v2a.synth import CLASSES, FUNDAMENTALS, Event, tone

SR = 16000


# -- Fréchet distance and MFCC ---------------------------------------------------------------------


def closed_form(mu1, var1, mu2, var2) -> float:
    """FD of Gaussians whose covariances share eigenvectors: |Δμ|² + Σ (√λ1 − √λ2)²."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2))


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    var1, var2 = rng.uniform(0.1, 4, size=d), rng.uniform(0.1, 4, size=d)
    expected = closed_form(mu1, var1, mu2, var2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)
    # the same in a rotated basis (commuting, non-diagonal covariances)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1, s2 = q @ np.diag(var1) @ q.T, q @ np.diag(var2) @ q.T
    assert frechet_distance(q @ mu1, s1, q @ mu2, s2) == pytest.approx(expected, rel=1e-9)
    # symmetric, zero for identical sets, and fine with rank-deficient covariances
    a = rng.normal(size=(d, d))
    s3 = a @ a.T
    assert frechet_distance(mu1, s1, mu2, s3) == pytest.approx(frechet_distance(mu2, s3, mu1, s1), rel=1e-9)
    assert frechet_distance(mu1, s3, mu1, s3) == pytest.approx(0.0, abs=1e-9 * np.trace(s3))
    low1, low2 = var1.copy(), var2.copy()
    low1[:3] = 0.0
    low2[2:] = 0.0
    assert frechet_distance(mu1, np.diag(low1), mu2, np.diag(low2)) == pytest.approx(
        closed_form(mu1, low1, mu2, low2), rel=1e-9)


def test_running_moments_match_numpy():
    rng = np.random.default_rng(1)
    frames = rng.normal(loc=50.0, scale=[1.0, 3.0, 0.5], size=(300, 3))
    moments = Moments()
    for chunk in np.array_split(frames, 7):
        moments.add(chunk)
    moments.add(np.zeros((0, 3)))
    assert moments.count == 300 and moments.dim == 3
    np.testing.assert_allclose(moments.mean(), frames.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.covariance(), np.cov(frames.T), rtol=1e-9)


def test_mfcc_is_the_orthonormal_dct_of_the_log_mel_frames():
    rng = np.random.default_rng(2)
    log_mel = rng.normal(size=(5, 64))
    n = log_mel.shape[1]
    direct = np.array([[
        math.sqrt((1 if k == 0 else 2) / n)
        * sum(frame[i] * math.cos(math.pi * k * (2 * i + 1) / (2 * n)) for i in range(n))
        for k in range(20)] for frame in log_mel])
    np.testing.assert_allclose(mfcc(log_mel), direct, atol=1e-10)
    basis = dct_matrix(n, n)
    np.testing.assert_allclose(basis.T @ basis, np.eye(n), atol=1e-12)  # orthonormal
    assert mfcc(log_mel[:, :8]).shape == (5, 8)  # at most n_mels coefficients


def test_hann_frames_window_the_padded_signal():
    rng = np.random.default_rng(3)
    wav = rng.normal(size=1000)
    n_fft, hop, pad = 64, 24, 32
    frames = hann_frames(wav, n_fft, hop, pad)
    padded = np.concatenate([np.zeros(pad), wav, np.zeros(pad)])
    assert frames.shape == ((len(padded) - n_fft) // hop + 1, n_fft)
    for k in (0, 1, len(frames) - 1):  # the same products, so bit-identical
        np.testing.assert_array_equal(frames[k], padded[k * hop:k * hop + n_fft] * np.hanning(n_fft))


def test_log_spectrogram_of_a_sine_peaks_at_its_bin():
    n_fft, hop = 512, 128
    frequency = 40 * SR / n_fft  # on bin 40
    wav = np.sin(2 * np.pi * frequency * np.arange(SR) / SR)
    spec = log_spectrogram(wav, SR, n_fft=n_fft, hop=hop)
    assert spec.shape == (SR // hop + 1, n_fft // 2 + 1)  # centred frames
    assert np.all(np.argmax(spec[2:-2], axis=1) == 40)  # frames away from the zero padding


# -- classes by their fundamentals ---------------------------------------------------------------


def test_classes_come_from_the_fundamentals_given():
    assert nearest_class(450.0, {"low": 200.0, "high": 460.0}) == "high"
    # nearest in log frequency: 300 Hz is 0.58 octave above 200 and 0.42 below 400
    assert nearest_class(300.0, {"a": 200.0, "b": 400.0}) == "b"
    assert nearest_class(float("nan"), {"a": 200.0}) == "" and nearest_class(0.0, {"a": 1.0}) == ""
    wav = np.zeros(SR)
    wav[SR // 2:] = np.sin(2 * np.pi * 700.0 * np.arange(SR // 2) / SR)
    assert estimate_class(wav, SR, 0.5, fundamentals={"x": 350.0, "y": 690.0}) == "y"
    assert estimate_class(wav, SR, 0.5, fundamentals=FUNDAMENTALS) == "blue_triangle"  # 820 Hz


# -- the package stays pure ----------------------------------------------------------------------

#: What v2a/metrics/ may import: the standard library, numpy, torch and v2a's lowest layer.
LOWEST_LAYER = {"v2a.errors", "v2a.sequences"}


def test_the_metrics_import_nothing_above_the_lowest_layer():
    folder = Path(__file__).resolve().parent.parent / "v2a" / "metrics"
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                found.append((path.name, node.module))
            elif isinstance(node, ast.Import):
                found += [(path.name, alias.name) for alias in node.names]
    assert ("onsets.py", "v2a.metrics.spectral") in found  # the walk sees project imports
    outside = [(name, module) for name, module in found if module.split(".")[0] == "v2a"
               and module not in LOWEST_LAYER and not module.startswith("v2a.metrics")]
    assert not outside, outside
    third_party = {module.split(".")[0] for _, module in found} - {"v2a"}
    assert third_party <= {"__future__", "math", "collections", "typing", "numpy", "torch"}


# -- onsets and classes on hand-made cases ---------------------------------------------------


def hand_made(times: list[float], classes: list[int], seconds: float = 3.0) -> np.ndarray:
    wav = np.zeros(round(seconds * SR))
    for t, c in zip(times, classes):
        piece = tone(CLASSES[c], SR)
        at = round(t * SR)
        wav[at:at + len(piece)] += piece[: len(wav) - at]
    return wav / np.abs(wav).max() * 0.9


TIMES = [0.3, 0.7, 1.0, 1.45, 2.1, 2.5]
CLS = [0, 1, 2, 3, 0, 2]
EVENTS = [Event(t, CLASSES[c].name) for t, c in zip(TIMES, CLS)]


def test_perfectly_synced_audio_scores_one():
    wav = hand_made(TIMES, CLS)
    result = score_clip(wav, SR, EVENTS, fundamentals=FUNDAMENTALS)
    assert result["onset_f1"] == 1.0
    assert result["class_accuracy"] == 1.0
    assert result["onset_offset"] < 0.005


def test_audio_shifted_by_200_ms_scores_about_zero():
    wav = hand_made([t + 0.2 for t in TIMES], CLS)
    result = score_clip(wav, SR, EVENTS, fundamentals=FUNDAMENTALS)
    assert result["onset_f1"] <= 0.2
    assert np.isnan(result["onset_offset"]) or result["onset_offset"] <= 0.05


def test_wrong_pitches_score_low_class_accuracy():
    wav = hand_made(TIMES, [(c + 1) % 4 for c in CLS])
    assert score_clip(wav, SR, EVENTS, fundamentals=FUNDAMENTALS)["class_accuracy"] == 0.0


def test_silence_has_no_onsets():
    assert len(detect_onsets(np.zeros(SR), SR)) == 0
    assert len(detect_onsets(1e-4 * np.random.default_rng(0).standard_normal(SR), SR)) == 0


def test_matching_is_one_to_one_within_the_tolerance():
    truth = [1.0, 2.0]
    assert onset_f1([1.04, 2.0], truth) == 1.0
    assert onset_f1([1.06, 2.0], truth) == pytest.approx(0.5)
    assert onset_f1([1.0, 1.01, 1.02], truth) == pytest.approx(2 * 1 / 5)
    assert onset_f1([], []) == 1.0 and onset_f1([], truth) == 0.0 and onset_f1(truth, []) == 0.0
    assert mean_onset_offset([1.02, 1.97], truth) == pytest.approx(0.025)
    assert np.isnan(mean_onset_offset([3.0], truth))
    assert np.isnan(class_accuracy(np.zeros(SR), SR, [], EVENTS, fundamentals=FUNDAMENTALS))
