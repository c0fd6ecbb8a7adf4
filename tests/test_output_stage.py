"""The output stage (v2a.output_stage): a look-ahead peak limiter and BS.1770 loudness
normalisation applied to generated audio before it is written."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from v2a import output_stage
from v2a.errors import UserError
from v2a.output_stage import (
    RELEASE_RESIDUE,
    OutputStage,
    OutputStageError,
    apply_output_stage,
    float32_ceiling,
    limit_peaks,
)

SR = 16000
CEILING = float32_ceiling(-1.0)
#: float32 results of two float64 computations that agree to ~1e-12 round to the same value or
#: to a neighbour: at most one ulp apart, and one ulp of v is at most 2**-23 · |v|
ONE_ULP = 2.0 ** -23


def sine(seconds: float, amplitude: float = 0.5, freq: float = 440.0, sr: int = SR) -> torch.Tensor:
    t = torch.arange(round(seconds * sr), dtype=torch.float64) / sr
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()[None]


def noise(seconds: float, std: float, channels: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(channels, round(seconds * SR), generator=generator) * std


def log_decay(release_ms: float, sr: int = SR) -> float:
    return math.log(RELEASE_RESIDUE) / (release_ms / 1000 * sr)


def reference_limiter(wav: torch.Tensor, *, lookahead: int, release_ms: float) -> torch.Tensor:
    """The module doc's definition, one frame at a time in plain Python floats."""
    x = wav.double().numpy()
    frames = x.shape[1]
    need = [max(0.0, math.log(v / CEILING)) if v > 0 else 0.0 for v in np.abs(x).max(axis=0)]
    rho = math.exp(log_decay(release_ms))
    rel, previous = {}, 0.0
    for u in range(-lookahead, frames):  # frames before 0 see the first peaks in their window
        window = need[max(u, 0):u + lookahead + 1]
        previous = max(max(window, default=0.0), rho * previous)
        rel[u] = previous
    gain = [math.exp(-sum(rel[u] for u in range(n - lookahead, n + 1)) / (lookahead + 1))
            for n in range(frames)]
    return torch.from_numpy(x * np.array(gain)).float()


# -- the limiter --------------------------------------------------------------------------------


def test_audio_under_the_ceiling_passes_bit_for_bit():
    wav = sine(2.0)
    wav[0, 100] = CEILING  # at the ceiling is not over it
    out, report = apply_output_stage(wav, SR, OutputStage())
    assert torch.equal(out, wav) and out.data_ptr() != wav.data_ptr()
    assert report.limited_samples == 0 and report.clipped_samples == 0
    assert report.warning() is None and report.notes == ()
    assert report.raw_peak_dbfs == pytest.approx(20 * math.log10(CEILING))


def test_a_spike_is_limited_and_the_sine_away_from_it_is_unchanged():
    wav = sine(3.0)
    spike = SR  # at 1 s
    wav[0, spike] = 3.0
    stage = OutputStage()  # 5 ms look-ahead, 200 ms release
    lookahead, release = round(0.005 * SR), round(0.2 * SR)
    limited = limit_peaks(wav, SR, ceiling_dbfs=-1.0)
    out = limited.audio
    assert limited.safety_clamped == 0  # the limiter itself kept the peak under the ceiling
    # the gain reaches the spike's full reduction exactly at the spike: 3.0 · ceiling / 3.0
    assert float(out[0, spike]) == CEILING and float(out.abs().max()) == CEILING
    # before the look-ahead window the gain is exactly 1 (no reduction is held there)
    assert torch.equal(out[:, :spike - lookahead], wav[:, :spike - lookahead])
    assert not torch.equal(out[:, spike - lookahead:spike], wav[:, spike - lookahead:spike])
    # within release_ms after the hold the reduction is at most a thousandth of the spike's
    depth = math.log(3.0 / CEILING)
    gain = (out[0].double() / wav[0].double())
    after = torch.arange(wav.shape[1]) >= spike + lookahead + release
    audible = wav[0].abs() > 1e-3  # a ratio of two roundings is good to two float32 ulps
    recovered = math.exp(-RELEASE_RESIDUE * depth) * (1 - 2 * ONE_ULP)
    assert bool((gain[after & audible] >= recovered).all())
    # ... and the recovery is gradual, not a jump back to 1
    halfway = spike + lookahead + release // 2
    assert math.exp(-depth) < float(gain[halfway]) < recovered
    # once the remaining reduction is below 2**-25 no float32 sample can change: exactly equal
    exact_from = spike + lookahead + math.ceil(math.log(depth * 2 ** 25) / -log_decay(200.0)) + 1
    assert torch.equal(out[:, exact_from:], wav[:, exact_from:])
    # apply_output_stage gives the same audio, and says that the raw output clipped
    staged, report = apply_output_stage(wav, SR, stage)
    assert torch.equal(staged, out)
    assert report.clipped_samples == 1 and report.samples == wav.numel()
    assert report.limited_samples == limited.changed == int((out != wav).sum())
    assert report.raw_peak_dbfs == pytest.approx(20 * math.log10(3.0))
    line = report.warning()
    assert "1 of 48000 samples" in line and "-1.0 dBFS" in line and "\n" not in line


@pytest.mark.parametrize("lookahead_ms, release_ms", [(5.0, 200.0), (0.0, 50.0), (2.0, 1.0)])
def test_the_limiter_matches_a_per_frame_reference(lookahead_ms, release_ms):
    wav = noise(0.25, 0.6, channels=2, seed=1)  # dense peaks over the ceiling
    wav[1, 7] = -4.0  # a peak near the start, in one channel
    wav[0, -3] = 2.5  # and one near the end
    out = limit_peaks(wav, SR, ceiling_dbfs=-1.0, lookahead_ms=lookahead_ms,
                      release_ms=release_ms)
    expected = reference_limiter(wav, lookahead=round(lookahead_ms * SR / 1000),
                                 release_ms=release_ms)
    torch.testing.assert_close(out.audio, expected, rtol=ONE_ULP, atol=0.0)
    assert out.safety_clamped == 0 and float(out.audio.abs().max()) <= CEILING


def test_blocks_give_the_result_of_one_pass(monkeypatch):
    wav = sine(2.0, amplitude=0.7)
    for at in (999, 1000, 1003, 2990, 17000):  # peaks on and near the block edges below
        wav[0, at] = 2.0
    whole = limit_peaks(wav, SR, ceiling_dbfs=-1.0)
    monkeypatch.setattr(output_stage, "BLOCK_FRAMES", 1000)  # release carried across blocks
    blocked = limit_peaks(wav, SR, ceiling_dbfs=-1.0)
    torch.testing.assert_close(blocked.audio, whole.audio, rtol=ONE_ULP, atol=0.0)
    assert blocked.safety_clamped == 0


def test_stereo_channels_share_one_gain():
    left, right = sine(2.0, amplitude=0.5), sine(2.0, amplitude=0.3, freq=300.0)
    left[0, SR] = 3.0  # only the left channel overshoots
    wav = torch.cat([left, right])
    out, report = apply_output_stage(wav, SR, OutputStage())
    gains = out.double() / wav.double()
    near = torch.zeros(wav.shape[1], dtype=torch.bool)
    near[SR - 40:SR + 400] = True
    near &= (wav.abs() > 1e-3).all(dim=0)  # no ratio of near-zero values
    # each ratio is the shared gain times one float32 rounding (at most 2**-24 relative), so the
    # two differ by at most 2**-23 relative; twice that leaves room for the float64 arithmetic
    torch.testing.assert_close(gains[0, near], gains[1, near], rtol=2 * ONE_ULP, atol=0.0)
    assert float(gains[1, SR]) < 0.5  # the quiet channel is turned down with the loud one
    assert float(out.abs().max()) == CEILING
    # identical channels stay identical
    twin, _ = apply_output_stage(torch.cat([left, left]), SR, OutputStage())
    assert torch.equal(twin[0], twin[1])


@pytest.mark.parametrize("make", [
    lambda: noise(2.0, 1.5, channels=2),  # +3.5 dB over full scale, limited almost everywhere
    lambda: torch.sign(sine(1.0, freq=50.0)) * 1.0,  # a full-scale square wave
    lambda: torch.cat([noise(1.0, 0.1), noise(1.0, 0.1, seed=3) * 40]),  # one hot channel
    lambda: noise(0.004, 2.0),  # shorter than the look-ahead
], ids=["loud-noise", "square", "hot-channel", "shorter-than-lookahead"])
@pytest.mark.parametrize("lookahead_ms", [0.0, 5.0])
def test_the_safety_clamp_never_engages(make, lookahead_ms):
    wav = make()
    out = limit_peaks(wav, SR, ceiling_dbfs=-1.0, lookahead_ms=lookahead_ms)
    assert out.safety_clamped == 0
    assert out.audio.shape == wav.shape and out.audio.dtype == torch.float32
    assert float(out.audio.abs().max()) <= CEILING


def test_other_ceilings_hold_exactly():
    wav = noise(1.0, 1.0)
    for dbfs in (0.0, -0.3, -6.0, -20.0):
        out = limit_peaks(wav, SR, ceiling_dbfs=dbfs)
        assert out.safety_clamped == 0
        assert float(out.audio.abs().max()) <= float32_ceiling(dbfs) <= 10 ** (dbfs / 20)


def test_with_the_limiter_off_the_audio_is_kept_and_the_warning_says_so():
    wav = sine(1.0)
    wav[0, 10] = 1.5
    out, report = apply_output_stage(wav, SR, OutputStage(peak_dbfs=None))
    assert torch.equal(out, wav) and report.limited_samples == 0
    assert "limiter is off" in report.warning()


def test_float64_input_gives_float32_output():
    wav = sine(1.0).double() * 3
    out, report = apply_output_stage(wav, SR, OutputStage())
    assert out.dtype == torch.float32 and float(out.abs().max()) <= CEILING
    assert report.clipped_samples > 0


# -- refusing what cannot be processed ----------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_audio_is_refused_as_a_bug(bad):
    wav = sine(1.0)
    wav[0, 5] = bad
    with pytest.raises(ValueError, match="1 non-finite values .* has a bug") as caught:
        apply_output_stage(wav, SR, OutputStage())
    assert not isinstance(caught.value, UserError)  # a bug keeps its traceback


@pytest.mark.parametrize("wav", [
    torch.zeros(3, 100), torch.zeros(100), torch.zeros(1, 10, dtype=torch.int16),
])
def test_a_tensor_that_is_not_mono_or_stereo_float_is_refused(wav):
    with pytest.raises(ValueError, match="output stage takes"):
        apply_output_stage(wav, SR, OutputStage())


@pytest.mark.parametrize("options, fragment", [
    ({"peak_dbfs": 1.0}, "at or below 0"),
    ({"peak_dbfs": math.nan}, "at or below 0"),
    ({"loudness_lufs": -80.0}, "above -70"),
    ({"loudness_lufs": 3.0}, "above -70"),
    ({"lookahead_ms": -1.0}, "look-ahead"),
    ({"release_ms": 0.0}, "release must be at least 1 ms"),
    ({"release_ms": 0.5}, "release must be at least 1 ms"),
])
def test_bad_settings_are_user_errors(options, fragment):
    with pytest.raises(OutputStageError, match=fragment):
        OutputStage(**options)
    assert issubclass(OutputStageError, UserError)


def test_asking_for_loudness_without_pyloudnorm_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyloudnorm", None)  # `import pyloudnorm` now fails
    with pytest.raises(OutputStageError, match=r"pip install 'v2a\[loudness\]'"):
        apply_output_stage(noise(1.0, 0.1), SR, OutputStage(loudness_lufs=-23.0))
    out, _ = apply_output_stage(noise(1.0, 0.1), SR, OutputStage())  # limiting alone needs nothing
    assert out.shape == (1, SR)


# -- loudness -----------------------------------------------------------------------------------


@pytest.fixture
def pyloudnorm():
    return pytest.importorskip("pyloudnorm",
                               reason="loudness needs pyloudnorm (the loudness extra)")


@pytest.mark.parametrize("channels", [1, 2])
def test_loudness_reaches_the_target(pyloudnorm, channels):
    wav = noise(5.0, 0.01, channels=channels)
    out, report = apply_output_stage(wav, SR, OutputStage(loudness_lufs=-23.0))
    # one gain scales the K-weighted power exactly; only float32 rounding (~1e-7) remains, and
    # noise at -23 LUFS peaks far under the ceiling, so the limiter does not touch it
    assert report.limited_samples == 0
    assert report.loudness_after == pytest.approx(-23.0, abs=0.5)
    measured = pyloudnorm.Meter(SR).integrated_loudness(out.double().T.numpy())
    assert measured == pytest.approx(-23.0, abs=0.5)
    assert report.gain_db == pytest.approx(-23.0 - report.loudness_before)
    assert report.notes == ()


def test_loudness_comes_before_the_limiter(pyloudnorm):
    wav = noise(3.0, 0.01)
    out, report = apply_output_stage(wav, SR, OutputStage(loudness_lufs=-2.0))
    assert float(out.abs().max()) <= CEILING  # the gain pushed peaks over; the limiter held them
    assert report.limited_samples > 0 and report.clipped_samples == 0
    assert report.loudness_after < -2.5
    assert any("under the target" in note for note in report.notes)


def test_loudness_gain_with_the_limiter_off_notes_the_clipping(pyloudnorm):
    out, report = apply_output_stage(noise(2.0, 0.01), SR,
                                     OutputStage(loudness_lufs=-2.0, peak_dbfs=None))
    assert float(out.abs().max()) > 1.0
    assert any("limiter off" in note for note in report.notes)


def test_silence_gets_no_gain_and_no_nan(pyloudnorm):
    wav = torch.zeros(2, 2 * SR)
    out, report = apply_output_stage(wav, SR, OutputStage(loudness_lufs=-23.0))
    assert torch.equal(out, wav)
    assert report.gain_db == 0.0 and report.raw_peak_dbfs == -math.inf
    assert report.loudness_before == report.loudness_after == -math.inf
    assert any("silent" in note for note in report.notes)
    assert report.warning() is None


def test_a_clip_shorter_than_a_loudness_block_is_only_limited(pyloudnorm):
    wav = noise(0.3, 0.5)  # 300 ms < 400 ms, with peaks over the ceiling
    out, report = apply_output_stage(wav, SR, OutputStage(loudness_lufs=-23.0))
    assert report.loudness_before is None and report.loudness_after is None
    assert report.gain_db == 0.0
    assert any("400 ms" in note for note in report.notes)
    assert float(out.abs().max()) <= CEILING and not torch.isnan(out).any()


def test_empty_audio_passes(pyloudnorm):
    out, report = apply_output_stage(torch.zeros(1, 0), SR, OutputStage(loudness_lufs=-23.0))
    assert out.shape == (1, 0) and report.samples == 0 and report.loudness_before is None
