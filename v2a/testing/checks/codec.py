"""The checks of :class:`~v2a.interfaces.AudioCodec`, and how the common checks run a codec
(:data:`PROBE`)."""

from __future__ import annotations

import math

import torch

from v2a.testing import inputs
from v2a.testing.checks.support import (
    CLOSE,
    Check,
    ConformanceError,
    Factory,
    Probe,
    all_finite,
    as_sequence,
    as_tensor,
    build,
    call,
    component_name,
    difference,
    outputs_of,
    shape_of,
)


def _codec_example(codec, batch, gen):
    n = round(0.5 * codec.sample_rate)
    l = codec.num_frames(n)
    return {
        "wav": inputs.waveform(batch, codec.channels, n, codec.sample_rate, gen),
        "codes": inputs.codes(batch, codec.n_codebooks, l, codec.codebook_size, gen),
    }


def _codec_run(codec, ex, when=""):
    name = component_name(codec)
    encoded = as_tensor(call(f"{name}.encode{when}", codec.encode, ex["wav"]), f"{name}.encode")
    decoded = as_tensor(call(f"{name}.decode{when}", codec.decode, ex["codes"]), f"{name}.decode")
    latents = call(f"{name}.latents{when}", codec.latents, ex["codes"])
    latents = as_sequence(latents, f"{name}.latents")
    return {"encode": encoded, "decode": decoded, **outputs_of("latents", latents)}


#: How the common checks run a codec.
PROBE = Probe(_codec_example, _codec_run)


def check_codec_encode(factory: Factory) -> None:
    """``encode`` maps ``[b, channels, n]`` waveforms to int64 codes ``[b, n_codebooks, l]`` with
    every value in ``[0, codebook_size)``."""
    codec = build(factory)
    name = component_name(codec)
    b, n = 2, round(0.5 * codec.sample_rate)
    wav = inputs.waveform(b, codec.channels, n, codec.sample_rate, inputs.seeded())
    codes = as_tensor(call(f"{name}.encode", codec.encode, wav), f"{name}.encode")
    if codes.dtype != torch.int64:
        raise ConformanceError(
            f"{name}.encode returned codes of dtype {codes.dtype}; the AudioCodec contract is int64"
        )
    if codes.dim() != 3 or list(codes.shape[:2]) != [b, codec.n_codebooks]:
        raise ConformanceError(
            f"{name}.encode returned codes of shape {shape_of(codes)} for a {shape_of(wav)} waveform; "
            f"the AudioCodec contract is [b, n_codebooks, l] = [{b}, {codec.n_codebooks}, l]"
        )
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= codec.codebook_size:
        raise ConformanceError(
            f"{name}.encode returned codes in [{low}, {high}]; the AudioCodec contract is "
            f"[0, codebook_size) = [0, {codec.codebook_size})"
        )


def check_codec_rates(factory: Factory) -> None:
    """Shapes agree with the declared rates at several lengths (0.5, 1 and 1.3 s): ``encode``
    returns ``num_frames(n)`` frames, within one frame of ``n * frame_rate / sample_rate``, and
    ``num_samples(l)`` is within one sample of ``l * sample_rate / frame_rate``."""
    codec = build(factory)
    name, sr, fr = component_name(codec), codec.sample_rate, codec.frame_rate
    gen = inputs.seeded()
    for seconds in (0.5, 1.0, 1.3):
        n = round(seconds * sr)
        wav = inputs.waveform(1, codec.channels, n, sr, gen)
        codes = as_tensor(call(f"{name}.encode", codec.encode, wav), f"{name}.encode")
        l = codes.shape[-1]
        if l != codec.num_frames(n):
            raise ConformanceError(
                f"{name}.encode returned {l} frames for {n} samples ({seconds} s), but "
                f"num_frames({n}) is {codec.num_frames(n)}"
            )
        if abs(l - n * fr / sr) > 1:
            raise ConformanceError(
                f"{name}.encode returned {l} frames for {n} samples ({seconds} s), but frame_rate "
                f"{fr} at sample_rate {sr} implies {n * fr / sr:.2f}"
            )
        samples = codec.num_samples(l)
        if abs(samples - l * sr / fr) > 1:
            raise ConformanceError(
                f"{name}.num_samples({l}) is {samples}, but {l} frames at frame_rate {fr} and "
                f"sample_rate {sr} are {l * sr / fr:.1f} samples"
            )


def check_codec_decode(factory: Factory) -> None:
    """``decode`` maps codes ``[b, k, l]`` to a finite float waveform ``[b, channels,
    num_samples(l)]``; with ``length`` it returns exactly ``length`` samples, the same ones
    trimmed or followed by zeros. :meth:`AudioCodec.decode <v2a.interfaces.AudioCodec.decode>`
    fits the number of samples for every subclass; the channels, the dtype and finite values
    are the codec's own to get right."""
    codec = build(factory)
    name, c = component_name(codec), codec.channels
    n = round(0.5 * codec.sample_rate)
    l = codec.num_frames(n)
    codes = inputs.codes(2, codec.n_codebooks, l, codec.codebook_size, inputs.seeded())
    wav = as_tensor(call(f"{name}.decode", codec.decode, codes), f"{name}.decode")
    natural = codec.num_samples(l)
    if not wav.is_floating_point() or shape_of(wav) != [2, c, natural]:
        raise ConformanceError(
            f"{name}.decode returned a {wav.dtype} tensor of shape {shape_of(wav)} for codes of "
            f"shape {shape_of(codes)}; the AudioCodec contract is float [b, channels, "
            f"num_samples(l)] = [2, {c}, {natural}]"
        )
    if not all_finite(wav):
        raise ConformanceError(f"{name}.decode returned non-finite samples")
    for length in (n, natural + 7):
        out = as_tensor(call(f"{name}.decode", codec.decode, codes, length=length), f"{name}.decode")
        if shape_of(out) != [2, c, length]:
            raise ConformanceError(
                f"{name}.decode(codes, length={length}) returned shape {shape_of(out)}; the "
                f"AudioCodec contract is exactly {length} samples, [2, {c}, {length}]"
            )
        keep = min(length, natural)
        diff = difference({"decode": wav[..., :keep]}, {"decode": out[..., :keep]}, tol=CLOSE)
        if diff or bool((out[..., keep:] != 0).any()):
            raise ConformanceError(
                f"{name}.decode(codes, length={length}) is not the {natural}-sample decode "
                f"trimmed or zero-padded to {length} samples ({diff or 'non-zero padding'})"
            )


def check_codec_latents(factory: Factory) -> None:
    """``latents`` maps codes ``[b, k, l]`` to a finite float FeatureSequence ``[b, l, latent_dim]``
    at ``frame_rate``."""
    codec = build(factory)
    name = component_name(codec)
    l = codec.num_frames(round(0.5 * codec.sample_rate))
    codes = inputs.codes(2, codec.n_codebooks, l, codec.codebook_size, inputs.seeded())
    latents = as_sequence(call(f"{name}.latents", codec.latents, codes), f"{name}.latents")
    values = latents.values
    if not values.is_floating_point() or shape_of(values) != [2, l, codec.latent_dim]:
        raise ConformanceError(
            f"{name}.latents returned {values.dtype} values of shape {shape_of(values)} for codes of "
            f"shape {shape_of(codes)}; the AudioCodec contract is float [b, l, latent_dim] = "
            f"[2, {l}, {codec.latent_dim}]"
        )
    if not math.isclose(latents.rate, codec.frame_rate, rel_tol=1e-6):
        raise ConformanceError(
            f"{name}.latents returned a sequence at rate {latents.rate}; the AudioCodec contract "
            f"is frame_rate = {codec.frame_rate}"
        )
    if not all_finite(values, latents.mask):
        raise ConformanceError(f"{name}.latents returned non-finite values")


#: The checks of this kind, in the order they run (after the common checks).
KIND_CHECKS: list[Check] = [check_codec_encode, check_codec_rates, check_codec_decode, check_codec_latents]
