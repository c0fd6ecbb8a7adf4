"""The metrics of v2a/metrics/: the Fréchet distance against closed forms, running moments against
numpy, MFCC against a direct DCT, the shared framing and the spectrogram, onset detection,
matching, F1, offset and class accuracy on hand-made audio (tones of `v2a synth`'s classes), and
that the package stays pure (it imports nothing of v2a above the lowest layer); then the novelty
score (NS), KL and Inception Score on class probabilities, DeSync's bookkeeping, and onset
accuracy and AP on hand-made onset lists."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from v2a.errors import UserError
from v2a.metrics.classes import (
    class_distribution,
    inception_score,
    inception_scores,
    kl_divergence,
)
from v2a.metrics.desync import OFFSETS, desync, offset_of, segments
from v2a.metrics.frechet import Moments, frechet_distance
from v2a.metrics.novelty import correlation, lagged_correlation, novelty_curve, novelty_score
from v2a.metrics.onsets import (
    average_precision,
    class_accuracy,
    detect_onsets,
    estimate_class,
    mean_onset_offset,
    nearest_class,
    onset_accuracy,
    onset_average_precision,
    onset_confidence,
    onset_f1,
    score_clip,
    score_onset_transfer,
    summarise_onset_transfer,
    suppress_nearby_onsets,
    transfer_matches,
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


def test_frechet_distance_of_non_commuting_gaussians_matches_the_2d_closed_form():
    # For a 2x2 PSD M, tr √M = √(tr M + 2 √det M); with M = S1^½ S2 S1^½, tr M = tr(S1 S2) and
    # det M = det S1 · det S2 — a closed form that needs no matrix square root.
    s1 = np.array([[2.0, 0.3], [0.3, 0.5]])
    s2 = np.array([[1.0, -0.7], [-0.7, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)  # the case the diagonal test above cannot reach
    mu1, mu2 = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    cross = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * cross)
    # float64 eigendecompositions of matrices with condition numbers under 10 err by a few ulps
    # of the traces (~1e-15 here); 1e-12 relative leaves a wide margin
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


# -- NS: novelty-curve correlation ---------------------------------------------------------------


def noise_bursts(times: list[float], seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Decaying noise bursts (50 ms, 10 ms decay) starting at ``times``."""
    rng = np.random.default_rng(seed)
    wav = np.zeros(round(seconds * SR))
    n = round(0.05 * SR)
    for t in times:
        at = round(t * SR)
        wav[at:at + n] += rng.standard_normal(n) * np.exp(-np.arange(n) / (0.01 * SR))
    return wav


BURSTS = [0.2, 0.45, 0.8, 1.1, 1.35]


def test_novelty_curve_rate_length_and_a_constant_signal():
    wav = noise_bursts(BURSTS)
    curve, rate = novelty_curve(wav, SR)
    assert rate == 100.0  # 10 ms hops at 16 kHz: 160 samples
    n_fft, hop = 640, 160  # 40 ms windows, no padding; the flux has one value fewer than frames
    assert curve.shape == ((len(wav) - n_fft) // hop,)
    assert np.all(curve >= 0) and curve.max() > 0
    # no padding, so a constant signal's frames are identical and its curve exactly zero
    for function in ("spectral_flux", "energy"):
        flat, _ = novelty_curve(np.full(SR, 0.3), SR, function=function)
        assert flat.size > 0 and np.all(flat == 0.0)
    with pytest.raises(UserError, match="spectral_flux"):
        novelty_curve(wav, SR, function="spectral_flx")


@pytest.mark.parametrize("function", ["spectral_flux", "energy"])
def test_novelty_score_of_a_signal_with_itself_is_one(function):
    wav = noise_bursts(BURSTS)
    # the same curve on both sides: Σd² / (√Σd² · √Σd²), which rounds to 1 within a few ulps
    assert novelty_score(wav, wav, SR, function=function) == pytest.approx(1.0, abs=1e-12)


def test_a_shifted_copy_scores_lower_at_lag_zero_and_one_within_the_lag_window():
    wav = noise_bursts(BURSTS)
    shift = 2400  # 0.15 s: 15 hops exactly, so the late copy's frames equal the original's
    late = np.concatenate([np.zeros(shift), wav[:-shift]])
    assert novelty_score(late, wav, SR) < 0.5
    # within ±0.2 s the best lag is +15 frames, where the overlapping curves hold the same
    # values (the moving average's edges lie where both curves are zero): 1 within rounding
    assert novelty_score(late, wav, SR, max_lag_seconds=0.2) == pytest.approx(1.0, abs=1e-12)
    curve_late, _ = novelty_curve(late, SR)
    curve, _ = novelty_curve(wav, SR)
    assert lagged_correlation(curve_late, curve, 15) == pytest.approx(1.0, abs=1e-12)
    assert lagged_correlation(curve_late, curve, -15) < 0.5  # the sign: positive means late


def test_novelty_score_of_flat_signals_is_defined():
    wav = noise_bursts(BURSTS)
    constant = np.full(2 * SR, 0.3)
    assert novelty_score(constant, wav, SR) == 0.0  # one side has no events
    assert novelty_score(wav, np.zeros(2 * SR), SR) == 0.0
    assert novelty_score(constant, np.zeros(2 * SR), SR) == 1.0  # neither has events: agree
    assert correlation(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0, abs=1e-15)


# -- KL and IS on class probabilities ------------------------------------------------------------


def test_kl_of_identical_distributions_is_zero():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(6), size=5)
    # with eps 0 both log terms are the same numbers: exactly 0
    assert kl_divergence(p, p, multi_label=False, eps=0.0) == 0.0
    # with av-benchmark's eps each term P·log(P / (P + eps)) lies in [-eps, 0]
    assert -6 * 1e-6 <= kl_divergence(p, p, multi_label=False) <= 0.0
    sigmoid = rng.uniform(0.01, 0.99, size=(5, 6))
    assert kl_divergence(sigmoid, sigmoid, multi_label=True, eps=0.0) == 0.0


def test_kl_of_a_two_class_case_by_hand_and_its_direction():
    reference, generated = np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])
    # KL(ref ‖ gen) = 0.5 log(0.5/0.9) + 0.5 log(0.5/0.1) = 0.5 log(25/9) = log(5/3); a few
    # float64 logs and products: 1e-12 relative is far above their rounding
    assert kl_divergence(reference, generated, multi_label=False, eps=0.0) == pytest.approx(
        math.log(5 / 3), rel=1e-12)
    with_eps = 0.5 * math.log(0.5 / (0.9 + 1e-6)) + 0.5 * math.log(0.5 / (0.1 + 1e-6))
    assert kl_divergence(reference, generated, multi_label=False) == pytest.approx(with_eps,
                                                                                   rel=1e-12)
    swapped = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # KL(gen ‖ ref) differs
    assert kl_divergence(generated, reference, multi_label=False, eps=0.0) == pytest.approx(
        swapped, rel=1e-12)
    # multi-label: sigmoids 0.75 and 0.25 are logits ±log 3, whose softmax is [0.9, 0.1]
    assert kl_divergence(np.array([[0.5, 0.5]]), np.array([[0.75, 0.25]]), multi_label=True,
                         eps=0.0) == pytest.approx(math.log(5 / 3), rel=1e-12)
    # the mean over paired clips
    both = kl_divergence(np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([[0.9, 0.1], [0.9, 0.1]]),
                         multi_label=False, eps=0.0)
    assert both == pytest.approx(math.log(5 / 3) / 2, rel=1e-12)
    with pytest.raises(ValueError):
        kl_divergence(reference, np.array([[0.5, 0.3, 0.2]]), multi_label=False)


def test_class_distribution_of_saturated_sigmoids_is_finite():
    rows = class_distribution(np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]]), multi_label=True)
    assert np.all(np.isfinite(rows))
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-15)
    assert rows[0].argmax() == 0 and rows[1] == pytest.approx([1 / 3] * 3, rel=1e-15)


@pytest.mark.parametrize("multi_label", [False, True])
def test_inception_score_of_identical_predictions_is_one(multi_label):
    n = 7
    for row in ([0.2, 0.5, 0.3], [1 / 3] * 3):
        p = np.tile(row, (n, 1))
        # the chunk's mean of n equal rows is off by at most n ulps, so each log ratio and the
        # KL are under ~n·2.2e-16 = 1.6e-15 and IS is 1 within that
        assert inception_score(p, multi_label=multi_label) == pytest.approx(1.0, abs=1e-14)


def test_inception_score_of_clips_each_certain_of_its_own_class_is_their_number():
    n = 5
    # one-hot rows: marginal 1/n, each clip's KL log n; exp(log n) = n within a few ulps
    assert inception_score(np.eye(n), multi_label=False) == pytest.approx(n, rel=1e-13)
    # as sigmoids, 1 and 0 are clipped to logits ±36: the off classes keep ~1e-31, negligible
    assert inception_score(np.eye(n), multi_label=True) == pytest.approx(n, rel=1e-12)


def test_inception_score_splits_and_shuffle():
    p = np.eye(2)[[0, 0, 1, 1]]
    assert inception_score(p, multi_label=False) == pytest.approx(2.0, rel=1e-13)
    # two contiguous chunks, each of identical rows: 1 each
    np.testing.assert_allclose(inception_scores(p, multi_label=False, splits=2), [1.0, 1.0],
                               atol=1e-14)
    rng = np.random.default_rng(5)
    q = rng.dirichlet(np.ones(4), size=12)
    permuted = q[np.random.RandomState(2020).permutation(12)]
    assert inception_score(q, multi_label=False, splits=3, shuffle_seed=2020) == \
        inception_score(permuted, multi_label=False, splits=3)
    with pytest.raises(UserError, match="splits"):
        inception_score(q, multi_label=False, splits=13)


# -- DeSync --------------------------------------------------------------------------------------


def test_desync_offsets_are_synchformers_21_classes():
    assert OFFSETS == (-2.0, -1.8, -1.6, -1.4, -1.2, -1.0, -0.8, -0.6, -0.4, -0.2, 0.0,
                       0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)


def test_desync_segments_are_the_first_and_last_window():
    (a0, a1), (b0, b1) = segments(10.0)
    assert (a0, a1) == (0.0, 4.8) and b1 == 10.0
    assert b0 == pytest.approx(5.2, abs=1e-15)  # 10 - 4.8 in float64
    (_, _), (c0, c1) = segments(8.0)  # overlapping when under 9.6 s
    assert c0 == pytest.approx(3.2, abs=1e-15) and c1 == 8.0
    assert segments(4.8) == [(0.0, 4.8)] and segments(3.0) == [(0.0, 3.0)]
    assert segments(2.0, window=1.0) == [(0.0, 1.0), (1.0, 2.0)]
    with pytest.raises(ValueError):
        segments(0.0)


def test_offset_of_the_highest_logit():
    logits = np.zeros((2, 3, 21))
    logits[0, 0, 0] = logits[0, 1, 10] = logits[0, 2, 20] = 1.0
    logits[1, :, 13] = 2.0
    logits[1, 2, 3] = 2.0  # a tie: the first class wins
    expected = np.array([[-2.0, 0.0, 2.0], [0.6, 0.6, -1.4]])
    np.testing.assert_array_equal(offset_of(logits), expected)
    assert offset_of(np.arange(3.0), offsets=[-1.0, 0.0, 1.0]) == 1.0
    with pytest.raises(ValueError):
        offset_of(np.zeros((2, 20)))


def test_desync_is_the_mean_over_clips_of_the_mean_absolute_offset():
    assert desync([[0.2, -0.4], [0.0], [-2.0, 2.0]]) == pytest.approx((0.3 + 0.0 + 2.0) / 3,
                                                                     rel=1e-15)
    assert desync([[0.4, 0.4]]) == pytest.approx(desync([[0.4]]), rel=1e-15)
    assert np.isnan(desync([]))
    with pytest.raises(ValueError):
        desync([[0.2], []])


# -- onset accuracy and AP (CondFoley's onset transfer) ------------------------------------------


def test_transfer_matching_is_greedy_by_peak_within_the_tolerance():
    assert transfer_matches([1.0], [0.95, 1.05], [0.4, 0.7]) == [1]
    assert transfer_matches([1.0], [0.95, 1.05], [0.7, 0.4]) == [0]
    assert transfer_matches([1.0], [0.95, 1.05], [0.5, 0.5]) == [1]  # ties: the later
    # greedy in the reference's order: the first onset claims the only candidate
    assert transfer_matches([1.0, 1.08], [1.05], [1.0]) == [0, None]
    assert transfer_matches([1.0], [1.2], [1.0]) == [None]  # 0.2 s away
    assert transfer_matches([1.0], [1.09], [1.0], tolerance=0.1) == [0]


def test_onset_accuracy_and_ap_on_hand_made_lists():
    reference = [0.5, 1.0, 1.5]
    generated = [0.52, 1.2, 1.55, 2.0]
    confidence = [0.9, 0.3, 0.8, 0.6]
    # 0.5 → 0.52 and 1.5 → 1.55 match; 1.0 has nothing within 0.1 s
    assert onset_accuracy(reference, generated, confidence) == pytest.approx(2 / 3, rel=1e-15)
    # items (label, score): (1,.9) (1,0) (1,.8) (0,.3) (0,.6); ranked .9 .8 .6 .3 0 give
    # precision 1, 1, 2/3, 1/2, 3/5 at recall 1/3, 2/3, 2/3, 2/3, 1: AP = 1/3 + 1/3 + 1/5
    assert onset_average_precision(reference, generated, confidence) == pytest.approx(
        13 / 15, rel=1e-15)
    # every generated onset matched: no negatives, so AP is 1 although one onset was missed
    assert onset_average_precision([0.5, 1.0], [0.5], [0.4]) == 1.0
    assert onset_accuracy([0.5, 1.0], [0.5]) == 0.5
    for ref, gen in (([], [0.5]), ([0.5], []), ([], [])):
        assert onset_accuracy(ref, gen) == 0.0
        assert onset_average_precision(ref, gen, [0.5] * len(gen)) == 0.0


def test_average_precision_by_hand():
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(5 / 6, rel=1e-15)
    assert average_precision([1, 0], [0.5, 0.5]) == 0.5  # a tie counts as one threshold
    assert average_precision([1, 1], [0.2, 0.0]) == 1.0
    assert average_precision([0, 0], [0.2, 0.1]) == 0.0


def test_onset_confidence_and_suppression():
    wav = np.zeros(100)
    wav[10], wav[50] = 1.0, -2.0  # |wav| normalised: 0.5 at sample 10, 1.0 at 50
    peak, confidence = onset_confidence(wav, 100, [0.1, 0.47, 0.0], window=0.05)  # ±5 samples
    np.testing.assert_array_equal(peak, [0.5, 0.0, 0.0])
    np.testing.assert_array_equal(confidence, [0.5, 1.0, 0.0])
    kept = suppress_nearby_onsets([1.0, 1.03, 1.2, 1.24], [0.5, 0.9, 0.3, 0.3])
    np.testing.assert_array_equal(kept, [1, 2])  # 1.0 and 1.24 are under 50 ms from stronger


def test_score_onset_transfer_end_to_end():
    sr = 1000
    wav = np.zeros(2 * sr)
    wav[500], wav[520], wav[1500] = 1.0, 0.5, 0.8
    scores = score_onset_transfer([0.51, 1.0, 1.5], [0.5, 0.52, 1.5, 1.8], wav, sr)
    # 0.52 lies 20 ms from 0.5, as confident (its ±50 ms window holds the 1.0): suppressed.
    # Kept 0.5 (1.0), 1.5 (0.8), 1.8 (0.0); 0.51 → 0.5, 1.5 → 1.5, 1.0 unmatched.
    assert scores["onset_accuracy"] == pytest.approx(2 / 3, rel=1e-15)
    # ranked 1.0 (1), 0.8 (1), then a tie at 0 of a positive and a negative:
    # AP = 1/3 · 1 + 1/3 · 1 + 1/3 · 3/4
    assert scores["onset_ap"] == pytest.approx(11 / 12, rel=1e-15)
    assert scores["onset_count_match"] == 0.0  # 3 against 4, counted before the suppression
    same = score_onset_transfer([0.5, 1.5], [0.5, 1.5], wav, sr)
    assert same == {"onset_accuracy": 1.0, "onset_ap": 1.0, "onset_count_match": 1.0}
    summary = summarise_onset_transfer([scores, same])
    assert summary["onset_accuracy"] == pytest.approx((2 / 3 + 1) / 2, rel=1e-15)
    assert summary["clips"] == 2
    assert np.isnan(summarise_onset_transfer([])["onset_ap"])
