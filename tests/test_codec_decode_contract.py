"""``AudioCodec`` keeps the decode contract itself: ``decode(codes)`` has ``num_samples(l)``
samples and ``decode(codes, length)`` exactly ``length``, the same samples trimmed or followed by
zeros, whatever the codec's decoder returns; and a codec that overrides ``decode`` itself, as
codecs did before ``decode_frames``, keeps working and is fitted the same way.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from v2a.interfaces import AudioCodec, fit_length
from v2a.sequences import FeatureSequence
from v2a.testing import CHECKS, ConformanceError, check_codec_decode, check_component

HOP = 10  # samples per code frame: 1000 Hz / 100 frames per second
LEVELS = 8


class StepCodec(AudioCodec):
    """Each frame of ``HOP`` samples is coded by its mean, quantised to ``LEVELS`` steps; its
    decoder holds each step for ``HOP`` samples and then gives ``extra`` samples of 1.0 more
    (``extra > 0``) or drops ``-extra`` samples (``extra < 0``): a decoder whose natural length
    is off."""

    def __init__(self, *, extra: int = 0):
        super().__init__()
        self.sample_rate, self.channels, self.frame_rate = 1000, 1, 100.0
        self.n_codebooks, self.codebook_size, self.latent_dim = 1, LEVELS, 1
        self.extra = extra
        self.register_buffer("table", torch.linspace(-1, 1, LEVELS), persistent=False)

    def encode(self, wav: Tensor) -> Tensor:
        l = self.num_frames(wav.shape[-1])
        mono = F.pad(wav.mean(dim=1, keepdim=True), (0, l * HOP - wav.shape[-1]))
        means = mono.unflatten(-1, (l, HOP)).mean(dim=-1).clamp(-1, 1)  # [b, 1, l]
        return ((means + 1) / 2 * (LEVELS - 1)).round().long()

    def steps(self, codes: Tensor) -> Tensor:  # [b, 1, l] -> [b, 1, l * HOP]
        return self.table[codes].repeat_interleave(HOP, dim=-1)

    def decode_frames(self, codes: Tensor) -> Tensor:
        wav = self.steps(codes)
        if self.extra >= 0:
            return F.pad(wav, (0, self.extra), value=1.0)
        return wav[..., : self.extra]

    def latents(self, codes: Tensor) -> FeatureSequence:
        return FeatureSequence(values=self.table[codes].transpose(1, 2), rate=self.frame_rate)


def long_by_7():
    return StepCodec(extra=7)


def short_by_7():
    return StepCodec(extra=-7)


class OwnDecode(StepCodec):
    """Written against the interface before ``decode_frames``: overrides ``decode`` and trims
    or pads by itself (its ``decode_frames`` is never called)."""

    def decode_frames(self, codes: Tensor) -> Tensor:
        raise AssertionError("an override of decode is not expected to use decode_frames")

    def decode(self, codes: Tensor, length: int | None = None) -> Tensor:
        """The codec's own decode."""
        wav = self.steps(codes)
        return wav if length is None else fit_length(wav, length)


class OwnDecodeOnly(AudioCodec):
    """Written against the interface before ``decode_frames``, from ``AudioCodec`` directly:
    no ``decode_frames`` at all. ``wrong`` makes its decode ignore ``length`` and return 5
    samples too many, whose values are not zeros."""

    def __init__(self, *, wrong: bool = False):
        super().__init__()
        self.sample_rate, self.channels, self.frame_rate = 1000, 1, 100.0
        self.n_codebooks, self.codebook_size, self.latent_dim = 1, LEVELS, 1
        self.wrong = wrong
        self.inner = StepCodec()

    def encode(self, wav: Tensor) -> Tensor:
        return self.inner.encode(wav)

    def decode(self, codes: Tensor, length: int | None = None) -> Tensor:
        wav = self.inner.steps(codes)
        if self.wrong:
            return F.pad(wav, (0, 5), value=0.5)
        return wav if length is None else fit_length(wav, length)

    def latents(self, codes: Tensor) -> FeatureSequence:
        return self.inner.latents(codes)


def wrong_own_decode():
    return OwnDecodeOnly(wrong=True)


CODES = torch.tensor([[[0, 3, 7, 5, 1]]])  # [b=1, k=1, l=5]: 50 samples at the natural length
NATURAL = 5 * HOP


def reference() -> Tensor:
    """The 50 samples these codes decode to: each step held for HOP samples."""
    return StepCodec().steps(CODES)


@pytest.mark.parametrize("extra", [7, -7], ids=["7 too many", "7 too few"])
def test_decode_fits_a_decoder_that_gives_too_many_or_too_few_samples(extra):
    codec, ref = StepCodec(extra=extra), reference()
    kept = NATURAL if extra > 0 else NATURAL + extra  # the samples the decoder gave
    natural = codec.decode(CODES)
    assert natural.shape == (1, 1, codec.num_samples(5)) == (1, 1, NATURAL)
    assert torch.equal(natural[..., :kept], ref[..., :kept])
    assert torch.equal(natural[..., kept:], torch.zeros(1, 1, NATURAL - kept))  # zero-padded
    for length in (23, NATURAL, NATURAL + 9):
        out = codec.decode(CODES, length=length)
        assert out.shape == (1, 1, length)
        assert torch.equal(out, fit_length(natural, length))  # the same samples, then zeros


def test_samples_past_num_samples_never_reach_a_longer_length():
    """The decoder's 7 extra samples (1.0) are cut at num_samples(l): asked for more, the
    output is the 50 samples and then zeros, as the contract says, not the extra samples."""
    out = StepCodec(extra=7).decode(CODES, length=NATURAL + 9)
    assert torch.equal(out[..., :NATURAL], reference())
    assert torch.equal(out[..., NATURAL:], torch.zeros(1, 1, 9))


@pytest.mark.parametrize("factory", [long_by_7, short_by_7, OwnDecode, OwnDecodeOnly,
                                     wrong_own_decode])
def test_every_codec_satisfies_the_decode_check_through_the_interface(factory):
    check_codec_decode(factory)
    assert check_component(factory) == [c.__name__ for c in CHECKS["codec"]]


def test_an_override_of_decode_keeps_working_unchanged():
    codec, ref = OwnDecode(), reference()
    assert torch.equal(codec.decode(CODES), ref)
    assert torch.equal(codec.decode(CODES, length=23), ref[..., :23])
    assert torch.equal(codec.decode(CODES, 23), ref[..., :23])  # length by position too
    assert torch.equal(codec.decode(CODES, length=60), F.pad(ref, (0, 10)))
    assert type(codec).decode.__doc__ == "The codec's own decode."  # wrapped, not replaced
    assert OwnDecode.decode.__wrapped__.__qualname__ == "OwnDecode.decode"


def test_an_override_of_decode_without_decode_frames_is_still_a_codec():
    codec = OwnDecodeOnly()  # instantiable: decode_frames is its decode without a length
    assert torch.equal(codec.decode_frames(CODES), reference())


def test_a_wrong_override_of_decode_is_fitted():
    """Ignoring ``length`` and returning 5 samples of 0.5 too many: fitted all the same."""
    codec, ref = OwnDecodeOnly(wrong=True), reference()
    assert torch.equal(codec.decode(CODES), ref)
    assert torch.equal(codec.decode(CODES, length=23), ref[..., :23])
    assert torch.equal(codec.decode(CODES, length=60), F.pad(ref, (0, 10)))


def test_a_subclass_calling_a_wrapped_decode_is_fitted_once_more_harmlessly():
    class Louder(OwnDecode):
        def decode(self, codes, length=None):
            return 2 * super().decode(codes, length)

    assert torch.equal(Louder().decode(CODES, length=60), 2 * F.pad(reference(), (0, 10)))


def test_a_codec_with_neither_decode_nor_decode_frames_cannot_be_built():
    class NoDecoder(AudioCodec):
        def encode(self, wav):
            return wav.long()

        def latents(self, codes):
            return FeatureSequence(values=codes.float().transpose(1, 2), rate=1.0)

    with pytest.raises(TypeError, match="decode_frames"):
        NoDecoder()


def test_a_decode_that_returns_no_tensor_is_still_reported_by_the_kit():
    class ReturnsList(OwnDecodeOnly):
        def decode(self, codes, length=None):
            return [super().decode(codes, length)]

    with pytest.raises(ConformanceError, match="ReturnsList.decode returned a list, not a torch.Tensor"):
        check_codec_decode(ReturnsList)
