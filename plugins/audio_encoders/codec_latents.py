"""The ``codec_latents`` audio encoder: the continuous latents of any codec (FDD-style metrics)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from v2a import AudioEncoder, ComponentSpec, FeatureSequence, hookimpl
from v2a.registry import component_option, default_registry


@dataclass
class CodecLatentsConfig:
    codec: dict = component_option("codec", "spectral_rvq")
    """the codec whose continuous latents are the features ({plugin: NAME, ...options}); frozen"""


def codec_latents_properties(config: CodecLatentsConfig) -> dict:
    """The encoder attributes of the nested codec's declaration (see
    ``ComponentSpec.properties``): its sample rate, latent width and frame rate, where declared."""
    codec = default_registry().properties_from("codec", config.codec)  # as the build resolves it
    found = {"sample_rate": "sample_rate", "dim": "latent_dim", "rate": "frame_rate"}
    return {ours: codec[theirs] for ours, theirs in found.items() if theirs in codec}


class CodecLatents(AudioEncoder):
    """The continuous latents of any codec: ``latents(encode(wav))`` (for FDD-style metrics).

    The codec is a nested component (``codec: {plugin: dac, ...}``), frozen; features are
    ``[b, l, latent_dim]`` at the codec's frame rate.
    """

    def __init__(self, config: CodecLatentsConfig):
        super().__init__()
        self.codec = default_registry().build_from("codec", config.codec).eval()
        self.codec.requires_grad_(False)
        self.sample_rate = self.codec.sample_rate
        self.dim = self.codec.latent_dim
        self.rate = self.codec.frame_rate

    def encode(self, wav: Tensor) -> FeatureSequence:
        with torch.no_grad():
            return self.codec.latents(self.codec.encode(wav))


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="codec_latents", build=CodecLatents, config=CodecLatentsConfig,
        properties=codec_latents_properties,
        description="continuous latents of any codec (FDD-style metrics)",
    ))
