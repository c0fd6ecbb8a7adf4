"""v2a.media.resample_audio: band-limited resampling of waveforms in memory (windowed sinc)."""

from __future__ import annotations

import math

import pytest
import torch

from v2a.media import resample_audio
from v2a.media.resample import HALF_WIDTH, STOPBAND_DB

# Tolerance of a resampled sine against the ideal one, as a share of its amplitude:
# * the Kaiser window's passband ripple is 10 ** (-STOPBAND_DB / 20) = 1e-4; Kaiser's design
#   formulas are empirical, within about 3 dB, hence 10 ** (-(STOPBAND_DB - 3) / 20) = 1.4e-4;
# * float32 arithmetic: each output is a sum of at most 2 * ceil(HALF_WIDTH * 48000 / 16000) + 1
#   = 193 products (the longest kernel of the rate pairs below) whose absolute values add up to
#   the kernel's L1 norm (under 2.5) times the amplitude; the worst-case rounding of such a sum
#   in any order is 193 * 2 ** -24 * 2.5 = 2.9e-5 (kernel values are rounded to float32 too:
#   2 ** -24 * 2.5 more, negligible).
SINE_TOLERANCE = 10 ** (-(STOPBAND_DB - 3) / 20) + 193 * 2.0**-24 * 2.5


def sine(frequency: float, rate: int, seconds: float, amplitude: float = 0.5) -> torch.Tensor:
    """``amplitude * sin(2 pi f t)`` sampled at ``rate``, computed in float64."""
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    return amplitude * torch.sin(2 * math.pi * frequency * t)


def interior(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """``wav`` without the output samples whose kernel reaches past the signal's ends (zeros
    there): HALF_WIDTH samples of the lower rate, in output samples, plus one."""
    edge = math.ceil(HALF_WIDTH * max(1.0, new_rate / orig_rate)) + 1
    return wav[..., edge:-edge]


def test_a_sine_keeps_its_frequency_and_amplitude_from_44k1_to_16k():
    source = sine(1000.0, 44100, 1.0)
    out = resample_audio(source.float(), 44100, 16000)
    assert out.shape == (16000,) and out.dtype == torch.float32
    # one second at 16 kHz: FFT bin k is k Hz
    assert int(torch.fft.rfft(out.double()).abs().argmax()) == 1000
    ideal = sine(1000.0, 16000, 1.0)  # the same sine at the new rate: not delayed, not scaled
    error = (interior(out.double(), 44100, 16000) - interior(ideal, 44100, 16000)).abs().max()
    assert float(error) <= 0.5 * SINE_TOLERANCE
    assert float(interior(out, 44100, 16000).abs().max()) == pytest.approx(0.5, abs=0.5 * SINE_TOLERANCE)


@pytest.mark.parametrize("orig_rate, new_rate, frequency", [
    (16000, 44100, 1000.0),  # up
    (48000, 16000, 3000.0),  # down by an integer factor
    (44100, 48000, 5000.0),
    (44100, 16000, 6700.0),  # the top of the passband: 84% of the new Nyquist frequency
    (44101, 16000, 1000.0),  # rates without a large common divisor: one kernel per sample
])
def test_sines_in_the_passband_come_out_as_the_ideal_sine(orig_rate, new_rate, frequency):
    out = resample_audio(sine(frequency, orig_rate, 0.25).float(), orig_rate, new_rate)
    ideal = sine(frequency, new_rate, out.shape[-1] / new_rate)
    error = (interior(out.double(), orig_rate, new_rate)
             - interior(ideal, orig_rate, new_rate)).abs().max()
    assert float(error) <= 0.5 * SINE_TOLERANCE


def test_what_the_new_rate_cannot_hold_is_filtered_out():
    # 8.05 and 10 kHz lie above 16 kHz's Nyquist frequency (8 kHz): they would fold back to
    # 7.95 and 6 kHz; the stopband takes them down by STOPBAND_DB (3 dB of slack, as above)
    for frequency in (8050.0, 10000.0):
        out = resample_audio(sine(frequency, 44100, 0.25).float(), 44100, 16000)
        assert float(interior(out, 44100, 16000).abs().max()) <= 0.5 * SINE_TOLERANCE


def test_an_impulse_is_not_delayed():
    for orig_rate, new_rate in ((44100, 16000), (16000, 44100), (48000, 44100)):
        impulse = torch.zeros(orig_rate // 10)
        impulse[orig_rate // 20] = 1.0
        out = resample_audio(impulse, orig_rate, new_rate)
        assert int(out.argmax()) == round(orig_rate // 20 * new_rate / orig_rate)


@pytest.mark.parametrize("orig_rate, new_rate", [
    (44100, 16000), (16000, 44100), (48000, 44100), (44100, 48000), (24000, 16000),
    (32000, 16000), (16000, 24000), (48000, 16000), (22050, 44100), (44101, 16000),
])
def test_lengths_are_exact(orig_rate, new_rate):
    for samples in (0, 1, 2, 3, 7, 10, 31, 257, 1000, 4097, 12345):
        out = resample_audio(torch.randn(2, samples), orig_rate, new_rate)
        assert out.shape == (2, round(samples * new_rate / orig_rate)), samples


def test_the_last_samples_are_kept():
    # a constant signal: away from the start, every output sample up to the last few (where
    # the kernel reaches past the end) is the constant; no tail is lost to a flush
    out = resample_audio(torch.full((4410,), 0.25), 44100, 16000)
    assert out.shape == (1600,)
    assert float((interior(out, 44100, 16000) - 0.25).abs().max()) <= 0.25 * SINE_TOLERANCE
    assert float(out[-1]) > 0.1  # the last sample, at the end of the signal, is not silence


def test_equal_rates_give_a_float32_copy():
    wav = torch.randn(3, 1000, dtype=torch.float64)
    out = resample_audio(wav, 16000, 16000)
    assert out.dtype == torch.float32 and torch.equal(out, wav.float())
    single = torch.randn(2, 500)
    same = resample_audio(single, 22050, 22050)
    assert torch.equal(same, single) and same.data_ptr() != single.data_ptr()


def test_rows_of_a_batch_are_resampled_independently():
    batch = torch.randn(2, 3, 4000, dtype=torch.float32) * 0.3
    batch[1, 2] = 0.0  # a silent row stays silent next to loud ones
    out = resample_audio(batch, 44100, 16000)
    assert out.shape == (2, 3, round(4000 * 16000 / 44100))
    assert torch.equal(out[1, 2], torch.zeros_like(out[1, 2]))
    for i in range(2):
        for c in range(3):
            alone = resample_audio(batch[i, c], 44100, 16000)
            # the same products summed, perhaps in another order: the float32 bound of
            # SINE_TOLERANCE's second term, for values up to 4 * 0.3 (randn rarely exceeds 4)
            assert torch.allclose(out[i, c], alone, rtol=0, atol=193 * 2.0**-24 * 2.5 * 1.2)


def test_other_float_types_and_the_device_are_kept():
    wav = sine(440.0, 24000, 0.1).to(torch.bfloat16)
    out = resample_audio(wav, 24000, 16000)
    assert out.dtype == torch.float32 and out.device == wav.device and out.shape == (1600,)


def test_bad_arguments_are_the_callers_bug():
    with pytest.raises(ValueError, match="new_rate must be a positive integer"):
        resample_audio(torch.zeros(10), 16000, 0)
    with pytest.raises(ValueError, match="orig_rate must be a positive integer"):
        resample_audio(torch.zeros(10), 16000.0, 8000)
    with pytest.raises(ValueError, match="a float tensor"):
        resample_audio(torch.zeros(10, dtype=torch.int16), 16000, 8000)
