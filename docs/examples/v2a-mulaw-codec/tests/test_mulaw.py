"""What makes μ-law μ-law: its round-trip SNR follows the textbook formula and hardly depends on
the signal level."""

import math

import pytest
import torch

from v2a_mulaw import MulawCodec, MulawConfig
from v2a_mulaw.codec import expand


def sine(amplitude: float, seconds: float = 1.0, hz: float = 440.0, sample_rate: int = 16000):
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * torch.sin(2 * math.pi * hz * t)).view(1, 1, -1)  # [b=1, c=1, n]


def round_trip_snr_db(codec: MulawCodec, wav: torch.Tensor) -> float:
    out = codec.decode(codec.encode(wav), length=wav.shape[-1])
    return 10 * math.log10(wav.pow(2).mean().item() / (wav - out).pow(2).mean().item())


def theoretical_snr_db(bits: int) -> float:
    """Uniform quantiser of 2**bits steps on the companded signal, seen through the expander:
    SNR = 3 · 4**bits / ln²(1 + μ), for signals loud enough that μ|x| >> 1 (μ = 2**bits - 1)."""
    mu = 2**bits - 1
    return 10 * math.log10(3 * 4**bits / math.log1p(mu) ** 2)  # 38.1 dB at 8 bits, 20.0 at 4


def test_snr_follows_mulaw_theory_and_drops_with_fewer_bits():
    wav = sine(0.5)
    snr = {bits: round_trip_snr_db(MulawCodec(MulawConfig(bits=bits)), wav) for bits in (8, 6, 4)}
    assert snr[8] > 35.0  # G.711's 8 bits: ~38 dB
    for bits, value in snr.items():
        assert value == pytest.approx(theoretical_snr_db(bits), abs=2.0), (bits, value)
    assert snr[8] > snr[6] + 6 > snr[4] + 12  # every 2 bits lost cost more than 6 dB


def test_snr_barely_depends_on_level():
    """The point of companding: a sine 20 dB quieter keeps nearly the same SNR at 8 bits, where
    plain 8-bit PCM would lose the full 20 dB."""
    codec = MulawCodec(MulawConfig(bits=8))
    loud, quiet = round_trip_snr_db(codec, sine(0.5)), round_trip_snr_db(codec, sine(0.05))
    assert quiet > 34.0
    assert abs(loud - quiet) < 3.0


def test_codes_are_one_per_sample_and_stereo_is_mixed_down():
    codec = MulawCodec(MulawConfig(bits=8))
    left, right = sine(0.5), sine(0.5, hz=220.0)
    stereo = torch.cat([left, right], dim=1)  # [1, 2, n]
    codes = codec.encode(stereo)
    assert codes.shape == (1, 1, stereo.shape[-1]) and codes.dtype == torch.int64
    assert torch.equal(codes, codec.encode((left + right) / 2))
    assert 0 <= codes.min() and codes.max() < 256


def test_latents_are_the_companded_values_of_the_decode():
    codec = MulawCodec(MulawConfig(bits=8))
    codes = codec.encode(sine(0.5))
    latents = codec.latents(codes)
    assert latents.values.shape == (1, codes.shape[-1], 1) and latents.rate == codec.frame_rate
    assert -1.0 <= latents.values.min() and latents.values.max() <= 1.0
    torch.testing.assert_close(expand(latents.values.transpose(1, 2), codec.mu), codec.decode(codes))


def test_invalid_options_and_codes_are_rejected():
    with pytest.raises(ValueError, match="bits"):
        MulawCodec(MulawConfig(bits=0))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        MulawCodec(MulawConfig(bits=4)).decode(torch.full((1, 1, 3), 16))
