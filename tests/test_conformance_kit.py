"""The conformance kit itself: honest reference components pass every check, and each check
catches the breakage it exists for (and only that one).

Sections: reference components (one small, correct implementation per interface), broken
variants (each a subclass that overrides one thing), the table pairing each breakage with the
check(s) that must catch it, and tests of the pytest/registry plumbing.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from v2a import ComponentSpec, hookimpl
from v2a.interfaces import (
    AudioCodec,
    AudioEncoder,
    Component,
    ConditionFuser,
    MaskedGenerator,
    Reranker,
    TextEncoder,
    VisualEncoder,
)
from v2a.registry import Registry
from v2a.sequences import Conditioning, FeatureSequence, TextFeatures
from v2a.testing import (
    CHECKS,
    COMMON_CHECKS,
    ConformanceError,
    RegistryFactory,
    check_component,
    check_declared_properties,
    check_interface,
    checks_for,
    factory_id,
    from_registry,
    parametrize_with_checks,
)

# -- reference components -------------------------------------------------------------------------


class RefCodec(AudioCodec):
    """Frames of ``hop`` samples → per level a learned projection, tanh and a uniform quantiser;
    decoding and latents sum one learned table row per level."""

    def __init__(self, *, sample_rate: int = 1000, hop: int = 30):
        super().__init__()
        self.sample_rate, self.channels, self.hop = sample_rate, 1, hop
        self.frame_rate = sample_rate / hop  # 33.3 Hz: 0.5 s is 16.7 frames, a partial one
        self.n_codebooks, self.codebook_size, self.latent_dim = 2, 16, 8
        k, v = self.n_codebooks, self.codebook_size
        self.analysis = nn.Linear(self.channels * hop, k)
        self.synthesis = nn.Parameter(0.1 * torch.randn(k, v, self.channels * hop))
        self.latent_table = nn.Parameter(torch.randn(k, v, self.latent_dim))

    def frames(self, wav):  # [b, c, n] -> [b, l, c * hop], the last frame zero-padded
        l = self.num_frames(wav.shape[-1])
        wav = F.pad(wav, (0, l * self.hop - wav.shape[-1]))
        return rearrange(wav, "b c (l h) -> b l (c h)", h=self.hop)

    def encode(self, wav):
        z = torch.tanh(4 * self.analysis(self.frames(wav)))  # [b, l, k] in (-1, 1)
        codes = ((z + 1) / 2 * (self.codebook_size - 1)).round().long()
        return rearrange(codes, "b l k -> b k l")

    def lookup(self, table, codes):  # table [k, v, d], codes [b, k, l] -> [b, l, d]
        return sum(table[j][codes[:, j]] for j in range(self.n_codebooks))

    def decode_frames(self, codes):  # decode, inherited, fits this to the length asked for
        frames = self.lookup(self.synthesis, codes)  # [b, l, c * hop]
        return rearrange(frames, "b l (c h) -> b c (l h)", c=self.channels)

    def latents(self, codes):
        return FeatureSequence(self.lookup(self.latent_table, codes), rate=self.frame_rate)


class RefVisualEncoder(VisualEncoder):
    """Mean colour of each frame, linearly projected: one feature per frame."""

    def __init__(self):
        super().__init__()
        self.fps, self.rate, self.dim = 8.0, 8.0, 6
        self.frame_size = (12, 16)
        self.proj = nn.Linear(3, self.dim)

    def colour(self, frames):  # [b, t, 3, h, w] -> [b, t, 3]
        if tuple(frames.shape[-2:]) != self.frame_size:
            raise ValueError(f"frames must be {self.frame_size}, got {tuple(frames.shape[-2:])}")
        return frames.mean(dim=(-1, -2))

    def encode(self, frames, times):
        values = self.proj(self.colour(frames))
        return FeatureSequence(values, rate=self.rate, start=float(times.reshape(-1)[0]))


class RefAudioEncoder(AudioEncoder):
    """Mean and RMS of the mono mix per hop of 40 samples, linearly projected."""

    def __init__(self):
        super().__init__()
        self.sample_rate, self.hop, self.dim = 800, 40, 5
        self.rate = self.sample_rate / self.hop
        self.proj = nn.Linear(2, self.dim)

    def stats(self, wav):  # [b, c, n] -> [b, t, 2]
        mono = wav.mean(dim=1)
        t = math.ceil(mono.shape[-1] / self.hop)
        mono = F.pad(mono, (0, t * self.hop - mono.shape[-1]))
        frames = rearrange(mono, "b (t h) -> b t h", h=self.hop)
        return torch.stack([frames.mean(-1), frames.pow(2).mean(-1).sqrt()], dim=-1)

    def encode(self, wav):
        return FeatureSequence(self.proj(self.stats(wav)), rate=self.rate)


class RefFuser(ConditionFuser):
    """Projects each stream to ``dim``; aligned = sum of the streams resampled to the codec
    frames, context = the projected streams one after the other (padding zeroed and masked)."""

    def __init__(self):
        super().__init__()
        self.dim, self.provides_aligned, self.provides_context = 8, True, True
        self.stream_dims = {"clip": 6, "sync": 4, "beats": 3}
        self.proj = nn.ModuleDict(
            {name: nn.Linear(d, self.dim) for name, d in self.stream_dims.items()}
        )

    def streams(self, streams):
        return {name: streams[name] for name in self.stream_dims}

    def fuse(self, streams, *, frame_rate, num_frames):
        projected = [
            s.replace(values=self.proj[name](s.values)) for name, s in self.streams(streams).items()
        ]
        resampled = [s.resample(frame_rate, num_frames) for s in projected]
        masks = [s.mask for s in resampled if s.mask is not None]
        aligned = FeatureSequence(
            values=sum(s.values for s in resampled), rate=frame_rate,
            mask=torch.stack(masks).all(dim=0) if masks else None,
        )
        valid = torch.cat([s.valid_mask() for s in projected], dim=1)
        values = torch.cat([s.values for s in projected], dim=1)
        context = FeatureSequence(
            values=torch.where(valid.unsqueeze(-1), values, 0.0), rate=projected[0].rate,
            mask=valid if any(s.mask is not None for s in projected) else None,
        )
        return Conditioning(aligned=aligned, context=context)


class RefTextFuser(RefFuser):
    """:class:`RefFuser` with a text: the pooled vector, projected, added to every aligned step
    and the projected tokens after the context; a dropped video is a learned null vector on
    every aligned step and one null context token (its video steps masked out)."""

    accepts_text = True

    def __init__(self):
        super().__init__()
        self.text_dim, self.text_pooled_dim = 5, 4
        self.text_proj = nn.Linear(self.text_dim, self.dim)
        self.pooled_proj = nn.Linear(self.text_pooled_dim, self.dim)
        self.null_video = nn.Parameter(torch.randn(self.dim))

    def fuse(self, streams, *, frame_rate, num_frames, text=None, drop_video=None, drop_text=None):
        b = next(iter(streams.values())).batch_size if streams else int(drop_video.shape[0])
        dropped = torch.zeros(b, dtype=torch.bool) if drop_video is None else drop_video.bool()
        null = self.null_video.expand(b, num_frames, -1)
        if streams:
            video = super().fuse(streams, frame_rate=frame_rate, num_frames=num_frames)
            aligned, covered = video.aligned.values, video.aligned.valid_mask()
            values, valid = video.context.values, video.context.valid_mask() & ~dropped[:, None]
        else:
            dropped = torch.ones(b, dtype=torch.bool)
            aligned, covered = null, torch.ones(b, num_frames, dtype=torch.bool)
            values, valid = null[:, :0], torch.zeros(b, 0, dtype=torch.bool)
        aligned = torch.where(dropped[:, None, None], null, aligned)
        values = torch.cat([self.null_video.expand(b, 1, -1), values], dim=1)
        valid = torch.cat([dropped[:, None], valid], dim=1)
        if text is not None:
            keep = torch.ones(b, dtype=torch.bool) if drop_text is None else ~drop_text.bool()
            aligned = aligned + torch.where(keep[:, None], self.pooled_proj(text.pooled), 0.0)[:, None]
            real = text.tokens.valid_mask() & keep[:, None]
            tokens = self.text_proj(text.tokens.values.masked_fill(~real[..., None], 0.0))
            values, valid = torch.cat([values, tokens], dim=1), torch.cat([valid, real], dim=1)
        return Conditioning(
            aligned=FeatureSequence(aligned, rate=frame_rate, mask=covered | dropped[:, None]),
            context=FeatureSequence(values.masked_fill(~valid[..., None], 0.0), rate=1.0, mask=valid))


class RefGenerator(MaskedGenerator):
    """Per-level code embeddings (index ``codebook_size`` is the mask token) + projected
    conditioning (aligned per frame, context mean-pooled over valid steps) → a linear layer.
    ``prepare`` turns the conditioning into one vector per frame (the null one where dropped)."""

    def __init__(self):
        super().__init__()
        self.n_codebooks, self.codebook_size, self.condition_dim = 2, 16, 8
        self.uses_aligned, self.uses_context = True, True
        k, v, width = self.n_codebooks, self.codebook_size, 16
        self.hidden_dim = width
        self.embed = nn.Embedding(k * (v + 1), width)
        self.aligned_proj = nn.Linear(self.condition_dim, width)
        self.context_proj = self.aligned_proj  # tied: shared storage in the state_dict
        self.null = nn.Parameter(torch.randn(width))  # the unconditional conditioning
        self.out = nn.Linear(width, k * v)

    def tokens(self, codes, mask):
        level = torch.arange(self.n_codebooks, device=codes.device).unsqueeze(-1)  # [k, 1]
        return torch.where(mask, self.codebook_size, codes) + level * (self.codebook_size + 1)

    def pool(self, context):  # [b, s, d] -> [b, width]: mean over valid steps
        valid = context.valid_mask().unsqueeze(-1)
        values = torch.where(valid, self.context_proj(context.values), 0.0)
        return values.sum(dim=1) / valid.sum(dim=1)

    def conditioning(self, condition, drop):
        c = 0.0
        if self.uses_aligned:
            c = c + self.aligned_proj(condition.aligned.values)
        if self.uses_context:
            c = c + self.pool(condition.context).unsqueeze(1)
        if drop is not None:
            c = torch.where(drop.view(-1, 1, 1), self.null, c)
        return c

    def prepare(self, condition, *, drop=None):
        c = self.conditioning(condition, drop)  # [b, l, width]
        return Conditioning(aligned=FeatureSequence(values=c, rate=condition.aligned.rate))

    def predict(self, codes, mask, prepared, *, return_hidden=False, level=None):
        h = torch.tanh(self.embed(self.tokens(codes, mask)).sum(dim=1) + prepared.aligned.values)
        logits = rearrange(self.out(h), "b l (k v) -> b k l v", k=self.n_codebooks)
        if level is not None:
            logits = logits[:, level:level + 1]
        return (logits, h) if return_hidden else logits


class RefReranker(Reranker):
    """Log-energy of each candidate, weighted, plus a projection of the mean video feature."""

    def __init__(self):
        super().__init__()
        self.sample_rate, self.video_streams = 800, {"clip": 6}
        self.energy_weight = nn.Parameter(1 + 0.1 * torch.randn(()))
        self.video_proj = nn.Linear(6, 1)

    def energy(self, candidates):  # [b, n, c, s] -> [b, n]
        return torch.log(candidates.pow(2).mean(dim=(-1, -2)) + 1e-8)

    def score(self, candidates, video):
        clip = video["clip"]
        valid = clip.valid_mask().unsqueeze(-1)
        mean = torch.where(valid, clip.values, 0.0).sum(dim=1) / valid.sum(dim=1)
        return self.energy_weight * self.energy(candidates) + self.video_proj(mean)


class RefTextEncoder(TextEncoder):
    """Words (split at spaces, at most 16) hashed into 97 embeddings; pooled: their mean; a text
    without words is one token of its own."""

    def __init__(self):
        super().__init__()
        self.dim = self.pooled_dim = 4
        self.max_tokens = 16
        self.embedding = nn.Embedding(97, 4)

    def token_ids(self, text):
        return [sum(map(ord, word)) % 96 + 1 for word in text.split()[: self.max_tokens]] or [0]

    def encode(self, texts):
        rows = [self.token_ids(text) for text in texts]
        length = max([len(row) for row in rows] + [1])
        ids = torch.tensor([row + [0] * (length - len(row)) for row in rows])
        mask = torch.tensor([[i < len(row) for i in range(length)] for row in rows])
        tokens = self.embedding(ids).masked_fill(~mask.unsqueeze(-1), 0.0)
        pooled = tokens.sum(dim=1) / self.real_count(mask, tokens)
        return TextFeatures.from_tensors(tokens=tokens, mask=mask, pooled=pooled)

    def real_count(self, mask, tokens):  # [b, 1]: the number of tokens pooled over
        return mask.sum(dim=1, keepdim=True).clamp(min=1).to(tokens.dtype)


def codec_properties(config) -> dict[str, Any]:
    """RefCodec's attributes as a plug-in would declare them (``ComponentSpec.properties``)."""
    return {"sample_rate": 1000, "channels": 1, "frame_rate": 1000 / 30, "n_codebooks": 2,
            "codebook_size": 16, "latent_dim": 8}


def declaring_registry(**declarations: Callable[[Any], dict[str, Any]]) -> Registry:
    """A registry holding RefCodec under each name given, declaring what the function gives."""
    module = types.ModuleType("declaring")

    @hookimpl
    def v2a_register_components(register):
        for name, properties in declarations.items():
            register(ComponentSpec(kind="codec", name=name, build=lambda config: RefCodec(),
                                   properties=properties))

    module.v2a_register_components = v2a_register_components
    registry = Registry()
    registry.register_module(module)
    return registry


def declared(name: str, properties: Callable[[Any], dict[str, Any]]) -> RegistryFactory:
    """A factory for RefCodec registered as ``name`` with the declaration ``properties``."""
    return RegistryFactory(kind="codec", name=name, options={},
                           registry=declaring_registry(**{name: properties}))


#: RefCodec through a registry, honestly declared: the declaration check compares for real.
DECLARED_CODEC = declared("ref", codec_properties)

REFERENCES = [RefCodec, RefVisualEncoder, RefAudioEncoder, RefFuser, RefTextFuser, RefGenerator,
              RefReranker, RefTextEncoder, DECLARED_CODEC]


@parametrize_with_checks(REFERENCES)
def test_reference_components_pass(factory, check):
    check(factory)


# -- broken variants: each overrides one thing ----------------------------------------------------

# common


class UnsavedRandomBuffer(RefVisualEncoder):
    """A random mixing matrix in a non-persistent buffer: it follows .to() but is not saved."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mix", torch.randn(self.dim, self.dim), persistent=False)

    def encode(self, frames, times):
        out = super().encode(frames, times)
        return out.replace(values=out.values @ self.mix)


class PlainAttributeTensor(RefAudioEncoder):
    """A fixed tensor kept as a plain attribute: it is not state, but it does not follow .to()."""

    def __init__(self):
        super().__init__()
        self.scale = torch.diag(torch.linspace(0.5, 1.5, self.dim))

    def encode(self, wav):
        out = super().encode(wav)
        return out.replace(values=out.values @ self.scale)


class CastsToFloat32(RefAudioEncoder):
    def encode(self, wav):
        out = super().encode(wav)
        return out.replace(values=out.values.float())


class AllocatesOnCPU(RefAudioEncoder):
    """Creates a tensor without a device inside encode."""

    def encode(self, wav):
        out = super().encode(wav)
        return out.replace(values=out.values + torch.zeros(self.dim))


class NoiseInEval(RefAudioEncoder):
    def encode(self, wav):
        out = super().encode(wav)
        return out.replace(values=out.values + 1e-2 * torch.randn_like(out.values))


class DimIsFloat(RefAudioEncoder):
    def __init__(self):
        super().__init__()
        self.dim = 5.0


class FlagIsInt(RefGenerator):
    def __init__(self):
        super().__init__()
        self.uses_context = 1


class NormalisesOverBatch(RefVisualEncoder):
    """Subtracts the batch's mean colour: rows leak into each other."""

    def colour(self, frames):
        colour = super().colour(frames)
        return colour - colour.mean(dim=0, keepdim=True)


# codec


class FloatCodes(RefCodec):
    def encode(self, wav):
        return super().encode(wav).to(wav.dtype)


class CentredCodes(RefCodec):
    """Codes centred on zero, so half of them are negative."""

    def encode(self, wav):
        return super().encode(wav) - self.codebook_size // 2


class DropsPartialFrame(RefCodec):
    def frames(self, wav):
        l = wav.shape[-1] // self.hop
        return rearrange(wav[..., : l * self.hop], "b c (l h) -> b l (c h)", h=self.hop)


class WrongFrameRate(RefCodec):
    """Declares 40 Hz but hops 30 samples at 1 kHz (33.3 Hz); num_frames/num_samples follow
    the hop, so encode agrees with num_frames but not with frame_rate."""

    def __init__(self):
        super().__init__()
        self.frame_rate = 40.0

    def num_frames(self, num_samples):
        return math.ceil(num_samples / self.hop)

    def num_samples(self, num_frames):
        return num_frames * self.hop


class IgnoresLength(RefCodec):
    """Overrides decode and drops ``length``: the interface still fits its output (see
    :func:`test_the_interface_fits_a_decode_that_ignores_length`), so it is no breakage."""

    def decode(self, codes, length=None):
        return super().decode(codes)


class DecodesStereo(RefCodec):
    """Declares one channel but decodes two."""

    def decode_frames(self, codes):
        return super().decode_frames(codes).expand(-1, 2, -1)


class LatentsAtSampleRate(RefCodec):
    def latents(self, codes):
        return super().latents(codes).replace(rate=float(self.sample_rate))


class CentresBatch(RefCodec):
    """Removes the batch's mean waveform before encoding: rows leak into each other."""

    def encode(self, wav):
        return super().encode(wav - wav.mean(dim=0, keepdim=True))


# visual encoder


class IgnoresTimes(RefVisualEncoder):
    def encode(self, frames, times):
        return super().encode(frames, times).replace(start=0.0)


class AbsoluteTimeValues(RefVisualEncoder):
    """Adds the absolute time to the features (values change when the clip moves)."""

    def encode(self, frames, times):
        out = super().encode(frames, times)
        return out.replace(values=out.values + times.reshape(-1)[0])


class PoolsFramePairs(RefVisualEncoder):
    """Averages pairs of frames, so its output is at fps / 2, yet it declares rate = fps."""

    def colour(self, frames):
        return rearrange(super().colour(frames), "b (t two) c -> b t two c", two=2).mean(dim=2)


class RateDisagrees(RefVisualEncoder):
    def encode(self, frames, times):
        return super().encode(frames, times).replace(rate=self.fps / 2)


# audio encoder


class WrongRate(RefAudioEncoder):
    def __init__(self):
        super().__init__()
        self.rate = 25.0  # the hop of 40 samples at 800 Hz is 20 Hz


# fuser


class IgnoresPadding(RefFuser):
    def streams(self, streams):
        return {name: s.replace(mask=None) for name, s in super().streams(streams).items()}


class HardCodedFrames(RefFuser):
    def fuse(self, streams, *, frame_rate, num_frames):
        return super().fuse(streams, frame_rate=frame_rate, num_frames=100)


class ForgetsContext(RefFuser):
    def fuse(self, streams, *, frame_rate, num_frames):
        out = super().fuse(streams, frame_rate=frame_rate, num_frames=num_frames)
        return Conditioning(aligned=out.aligned)


class IgnoresDropText(RefTextFuser):
    def fuse(self, streams, *, frame_rate, num_frames, text=None, drop_video=None, drop_text=None):
        return super().fuse(streams, frame_rate=frame_rate, num_frames=num_frames, text=text,
                            drop_video=drop_video)


class ReadsDroppedVideo(RefTextFuser):
    def fuse(self, streams, *, frame_rate, num_frames, text=None, drop_video=None, drop_text=None):
        return super().fuse(streams, frame_rate=frame_rate, num_frames=num_frames, text=text,
                            drop_video=None if streams else drop_video, drop_text=drop_text)


# generator


class ReadsMaskedCodes(RefGenerator):
    def tokens(self, codes, mask):
        return super().tokens(codes, torch.zeros_like(mask))


class IgnoresDrop(RefGenerator):
    def conditioning(self, condition, drop):
        return super().conditioning(condition, None)


class PoolsPaddedContext(RefGenerator):
    def pool(self, context):
        return self.context_proj(context.values).mean(dim=1)


class CachesOutsidePrepared(RefGenerator):
    """Keeps the prepared conditioning on the module instead of in what prepare returns."""

    def prepare(self, condition, *, drop=None):
        self.cache = self.conditioning(condition, drop)
        return condition

    def predict(self, codes, mask, prepared, *, return_hidden=False, level=None):
        h = torch.tanh(self.embed(self.tokens(codes, mask)).sum(dim=1) + self.cache)
        logits = rearrange(self.out(h), "b l (k v) -> b k l v", k=self.n_codebooks)
        if level is not None:
            logits = logits[:, level:level + 1]
        return (logits, h) if return_hidden else logits


class WrongHidden(RefGenerator):
    def predict(self, codes, mask, prepared, *, return_hidden=False, level=None):
        out = super().predict(codes, mask, prepared, return_hidden=return_hidden, level=level)
        return (out[0], out[1][:, :-1]) if return_hidden else out


class IgnoresLevel(RefGenerator):
    def predict(self, codes, mask, prepared, *, return_hidden=False, level=None):
        return super().predict(codes, mask, prepared, return_hidden=return_hidden)


class VocabIncludesMaskToken(RefGenerator):
    """Predicts codebook_size + 1 entries (the mask token too)."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(16, self.n_codebooks * (self.codebook_size + 1))


# declared properties

#: Declares 40 Hz, but RefCodec hops 30 samples at 1 kHz (33.3 Hz).
DECLARES_WRONG_RATE = declared("wrong_rate", lambda config: {**codec_properties(config),
                                                             "frame_rate": 40.0})


# reranker


class PositionBias(RefReranker):
    def score(self, candidates, video):
        n = candidates.shape[1]
        return super().score(candidates, video) + 0.1 * torch.arange(n, device=candidates.device)


class SelectsWorst(RefReranker):
    def select(self, candidates, video):
        return self.score(candidates, video).argmin(dim=1)


class IntegerRanks(RefReranker):
    """Returns the rank of each candidate (an int64 tensor) instead of a float score."""

    def score(self, candidates, video):
        return super().score(candidates, video).argsort(dim=1).argsort(dim=1)


class RelativeToBatch(RefReranker):
    def score(self, candidates, video):
        scores = super().score(candidates, video)
        return scores - scores.mean()


# text encoder
class EmptyPromptHasNoToken(RefTextEncoder):
    def encode(self, texts):
        out = super().encode(texts)
        real = out.tokens.mask & torch.tensor([bool(text) for text in texts]).unsqueeze(1)
        return TextFeatures(tokens=out.tokens.replace(mask=real), pooled=out.pooled)


class EmptyPromptRaises(RefTextEncoder):
    def token_ids(self, text):
        if not text:
            raise IndexError("list index out of range")  # as the first word of no words would
        return super().token_ids(text)


class PoolsOverPadding(RefTextEncoder):
    def real_count(self, mask, tokens):
        return torch.full((mask.shape[0], 1), mask.shape[1], dtype=tokens.dtype)


class AsciiOnly(RefTextEncoder):
    def token_ids(self, text):
        text.encode("ascii")  # raises UnicodeEncodeError on anything else
        return super().token_ids(text)


class NoTruncation(RefTextEncoder):
    def token_ids(self, text):
        return [sum(map(ord, word)) % 96 + 1 for word in text.split()] or [0]


class TruncatesEarly(RefTextEncoder):
    def token_ids(self, text):
        return super().token_ids(text)[: self.max_tokens - 1]


# -- the table: which check(s) catch each breakage ------------------------------------------------


@dataclass
class Broken:
    factory: Callable[[], Component]  # a component class, or a factory with a __name__
    fails: tuple[str, ...]  # the checks that must raise; the first is the one this breakage targets
    match: str  # a phrase the targeted check's message contains
    needs_cuda: bool = False

    def __repr__(self) -> str:
        return self.factory.__name__


INTERFACE = ("check_interface",)
STATE = ("check_state_round_trip",)
DTYPE = ("check_dtype_move",)
BATCH = ("check_batch_independence",)
RATES = ("check_codec_rates",)
NONDETERMINISM = ("check_deterministic", "check_state_round_trip", "check_batch_independence")

BROKEN = [
    # common
    Broken(DimIsFloat, INTERFACE, "dim is 5.0; the AudioEncoder contract is a positive int"),
    Broken(FlagIsInt, INTERFACE, "uses_context is 1; the MaskedGenerator contract is a bool"),
    Broken(UnsavedRandomBuffer, STATE, "not a registered parameter or persistent buffer"),
    Broken(PlainAttributeTensor, DTYPE, "encode after .to(torch.float64) raised RuntimeError"),
    Broken(CastsToFloat32, DTYPE, "output of CastsToFloat32 is torch.float32, not torch.float64"),
    Broken(AllocatesOnCPU, ("check_device_move",), "after .to('cuda')", needs_cuda=True),
    Broken(NoiseInEval, NONDETERMINISM, "not deterministic in eval mode"),
    Broken(NormalisesOverBatch, BATCH, "not batch independent: row 0 of a batch of 3"),
    Broken(DECLARES_WRONG_RATE, ("check_declared_properties",),
           "codec:wrong_rate declares frame_rate = 40.0, but the built RefCodec has frame_rate = "
           "33.333333333333336"),
    Broken(CentresBatch, BATCH, "encode differs"),
    Broken(RelativeToBatch, BATCH, "scores differs"),
    # codec
    Broken(FloatCodes, ("check_codec_encode",), "torch.float32; the AudioCodec contract is int64"),
    Broken(CentredCodes, ("check_codec_encode",), "[0, codebook_size) = [0, 16)"),
    Broken(DropsPartialFrame, RATES, "16 frames for 500 samples (0.5 s), but num_frames(500)"),
    Broken(WrongFrameRate, RATES, "frame_rate 40.0 at sample_rate 1000 implies 20"),
    Broken(DecodesStereo, ("check_codec_decode",),
           "shape [2, 2, 510] for codes of shape [2, 2, 17]; the AudioCodec contract is float "
           "[b, channels, num_samples(l)] = [2, 1, 510]"),
    Broken(LatentsAtSampleRate, ("check_codec_latents",), "rate 1000.0"),
    # visual encoder
    Broken(IgnoresTimes, ("check_visual_encoder_times",), "start must follow the times"),
    Broken(AbsoluteTimeValues, ("check_visual_encoder_times",), "values change when the times"),
    Broken(PoolsFramePairs, ("check_visual_encoder_output",), "8 steps for 16 frames"),
    Broken(RateDisagrees, ("check_visual_encoder_output",), "at rate 4.0"),
    # audio encoder
    Broken(WrongRate, ("check_audio_encoder_output",), "20 steps for 1 s of audio, but rate 25.0"),
    # fuser
    Broken(IgnoresPadding, ("check_fuser_padding",), "reads padded steps"),
    Broken(HardCodedFrames, ("check_fuser_output",), "num_frames=37"),
    Broken(ForgetsContext, ("check_fuser_output",), "no Conditioning.context, but ForgetsContext"),
    Broken(IgnoresDropText, ("check_fuser_text",), "whose text is dropped (drop_text) otherwise"),
    Broken(ReadsDroppedVideo, ("check_fuser_drop_video",), "reads the video of a row whose video"),
    # generator
    Broken(ReadsMaskedCodes, ("check_generator_masked_codes",), "reads masked codes"),
    Broken(IgnoresDrop, ("check_generator_drop",), "still depends on the conditioning"),
    Broken(CachesOutsidePrepared, ("check_generator_prepared",), "CachesOutsidePrepared.predict raised"),
    Broken(WrongHidden, ("check_generator_output",), "hidden states of shape"),
    Broken(IgnoresLevel, ("check_generator_output",), "level=0"),
    Broken(PoolsPaddedContext, ("check_generator_context_padding",), "reads padded context"),
    Broken(VocabIncludesMaskToken, ("check_generator_output",), "[2, 2, 12, 16]"),
    # reranker
    Broken(PositionBias, ("check_reranker_permutation",), "not permutation equivariant"),
    Broken(SelectsWorst, ("check_reranker_select",), "first best-scoring candidates"),
    Broken(IntegerRanks, ("check_reranker_scores",), "torch.int64 scores"),
    # text encoder
    Broken(EmptyPromptHasNoToken, ("check_text_encoder_output", "check_text_encoder_empty"),
           "no real token for ''"),
    Broken(EmptyPromptRaises, ("check_text_encoder_empty", "check_text_encoder_output"),
           "EmptyPromptRaises.encode raised IndexError"),
    Broken(PoolsOverPadding, ("check_text_encoder_padding", "check_batch_independence",
                              "check_text_encoder_empty", "check_text_encoder_truncation"),
           "different results in a batch with a longer text (row 0)"),
    Broken(AsciiOnly, ("check_text_encoder_unicode",), "raised UnicodeEncodeError"),
    Broken(NoTruncation, ("check_text_encoder_truncation", "check_text_encoder_padding"),
           "40 token steps; the TextEncoder contract is between 1 and max_tokens (16)"),
    Broken(TruncatesEarly, ("check_text_encoder_truncation",),
           "15 real tokens; a text longer than max_tokens (16) is truncated to exactly that many"),
]

CHECK_BY_NAME = {check.__name__: check for checks in CHECKS.values() for check in checks}


@pytest.mark.parametrize("case", BROKEN, ids=repr)
def test_each_breakage_is_caught_by_its_check(case):
    if case.needs_cuda and not torch.cuda.is_available():
        pytest.skip("the device move is only checked where CUDA is available")
    target, *others = case.fails
    with pytest.raises(ConformanceError) as caught:
        CHECK_BY_NAME[target](case.factory)
    assert case.match in str(caught.value)
    for name in others:
        with pytest.raises(ConformanceError):
            CHECK_BY_NAME[name](case.factory)


@pytest.mark.parametrize("case", BROKEN, ids=repr)
def test_each_breakage_passes_the_other_checks(case):
    checks = checks_for(case.factory())
    assert {c.__name__ for c in checks} >= set(case.fails)
    for check in checks:
        if check.__name__ not in case.fails:
            check(case.factory)


def test_every_check_has_a_breakage_that_it_catches():
    caught = {case.fails[0] for case in BROKEN}
    assert set(CHECK_BY_NAME) == caught


def test_the_interface_fits_a_decode_that_ignores_length():
    """A codec whose own ``decode`` drops ``length`` was a breakage of check_codec_decode; the
    AudioCodec interface now fits every decode to the contract, so it passes every check."""
    codes = torch.randint(0, 16, (2, 2, 17))
    with torch.no_grad():
        assert IgnoresLength().decode(codes, length=500).shape == (2, 1, 500)
    assert check_component(IgnoresLength) == [c.__name__ for c in CHECKS["codec"]]


# -- declared properties --------------------------------------------------------------------------


def test_a_factory_without_a_declaration_passes_the_declaration_check():
    check_declared_properties(RefCodec)  # a class: nothing declared, nothing to compare
    undeclared = RegistryFactory(kind="codec", name="plain", options={},
                                 registry=declaring_registry(plain=None))
    assert undeclared.declared_properties() == {}
    check_declared_properties(undeclared)


def test_the_declaration_check_compares_what_the_registry_declares():
    assert DECLARED_CODEC.declared_properties() == codec_properties(None)
    assert DECLARES_WRONG_RATE.declared_properties()["frame_rate"] == 40.0


def test_declared_rates_need_only_agree_to_1e_9():
    """A rate is a float64 quotient (1000 / 30) either side may compute in its own order: a
    relative difference of 1e-12 (thousands of ulps) passes, 1e-6 (a wrong rate) does not."""
    def declares_rate(relative_error: float):
        rate = 1000 / 30 * (1 + relative_error)
        return lambda config: {**codec_properties(config), "frame_rate": rate}

    check_declared_properties(declared("close", declares_rate(1e-12)))
    with pytest.raises(ConformanceError, match="declares frame_rate = 33.33336"):
        check_declared_properties(declared("off", declares_rate(1e-6)))


def test_a_declared_int_or_bool_must_be_exact_and_of_its_type():
    as_float = declared("as_float", lambda config: {"n_codebooks": 2.0000001})
    with pytest.raises(ConformanceError, match="declares n_codebooks = 2.0000001, but the built "
                       "RefCodec has n_codebooks = 2"):
        check_declared_properties(as_float)
    check_declared_properties(declared("int_ok", lambda config: {"n_codebooks": 2}))


def test_a_declared_property_must_be_an_attribute_of_the_interface():
    extra = declared("extra", lambda config: {"hop": 30})
    with pytest.raises(ConformanceError, match="declares the property 'hop', which is not an "
                       "attribute of the AudioCodec interface"):
        check_declared_properties(extra)


def test_a_declaration_that_raises_is_reported():
    def broken(config):
        raise KeyError("no such model")

    with pytest.raises(ConformanceError, match="the declared properties of codec:crash raised "
                       "KeyError"):
        check_declared_properties(declared("crash", broken))


# -- error messages -------------------------------------------------------------------------------


def test_conformance_error_is_an_assertion_error():
    assert issubclass(ConformanceError, AssertionError)


def test_a_component_that_raises_fails_with_the_method_and_exception():
    class Crashes(RefAudioEncoder):
        def encode(self, wav):
            raise RuntimeError("boom")

    with pytest.raises(ConformanceError, match=r"Crashes\.encode raised RuntimeError: boom") as e:
        check_component(Crashes)
    assert isinstance(e.value.__cause__, RuntimeError)  # the component's traceback is kept


# -- pytest and registry plumbing -----------------------------------------------------------------


def make_linear():
    return nn.Linear(2, 2)


def make_failing():
    raise OSError("weights not found")


def case_ids(mark):
    return [param.id for param in mark.args[1]]


def test_parametrize_with_checks_makes_one_case_per_applicable_check():
    mark = parametrize_with_checks([RefCodec, RefReranker])
    assert mark.name == "parametrize" and mark.args[0] == "factory, check"
    assert case_ids(mark) == [f"RefCodec-{c.__name__}" for c in CHECKS["codec"]] + [
        f"RefReranker-{c.__name__}" for c in CHECKS["reranker"]
    ]
    assert [param.values for param in mark.args[1][:2]] == [
        (RefCodec, COMMON_CHECKS[0]), (RefCodec, COMMON_CHECKS[1])
    ]
    assert "RefCodec-check_codec_encode" in case_ids(mark)
    assert "RefCodec-check_reranker_scores" not in case_ids(mark)


def test_parametrize_with_checks_reports_an_unusable_factory_as_one_failing_case():
    mark = parametrize_with_checks([make_linear, make_failing])
    assert case_ids(mark) == ["make_linear-check_interface", "make_failing-check_interface"]
    with pytest.raises(ConformanceError, match="returned a Linear, which is not a v2a.interfaces"):
        check_interface(make_linear)
    with pytest.raises(ConformanceError, match="make_failing raised OSError: weights not found"):
        check_interface(make_failing)


class NoInterface(Component):
    """A Component that implements none of the six interfaces."""


def test_a_component_of_no_interface_gets_only_the_interface_check():
    assert case_ids(parametrize_with_checks([NoInterface])) == ["NoInterface-check_interface"]
    with pytest.raises(ConformanceError, match="NoInterface implements none of the v2a interfaces"):
        check_component(NoInterface)


def test_checks_for_and_check_component():
    assert checks_for(RefGenerator()) == CHECKS["generator"]
    assert checks_for(make_linear()) == [check_interface]
    for kind, checks in CHECKS.items():
        assert checks[: len(COMMON_CHECKS)] == COMMON_CHECKS, kind
    assert check_component(RefFuser) == [c.__name__ for c in CHECKS["fuser"]]
    with pytest.raises(ConformanceError, match="int64"):
        check_component(FloatCodes)


def test_checks_leave_the_global_random_state_alone():
    state = torch.get_rng_state()
    check_component(RefGenerator)
    assert torch.equal(torch.get_rng_state(), state)


def test_from_registry_is_named_kind_colon_name_and_builds_with_options():
    factory = from_registry("audio_encoder", "mel", n_mels=16)
    assert factory_id(factory) == "audio_encoder:mel(n_mels=16)"
    assert factory_id(from_registry("audio_encoder", "mel")) == "audio_encoder:mel"
    assert case_ids(parametrize_with_checks([factory]))[0] == "audio_encoder:mel(n_mels=16)-check_interface"
    encoder = factory()
    assert encoder.dim == 16 and factory() is not encoder


def test_from_registry_reports_bad_options_and_names_through_the_checks():
    with pytest.raises(ConformanceError, match=r"audio_encoder:mel\(n_mel=16\) raised PluginError: .*n_mel"):
        check_interface(from_registry("audio_encoder", "mel", n_mel=16))
    with pytest.raises(ConformanceError, match="no audio_encoder plug-in is named 'mle'"):
        check_interface(from_registry("audio_encoder", "mle"))
