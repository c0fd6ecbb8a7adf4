"""The ``codec_latents`` audio encoder's implementation (the plug-in, its options and its
documentation are :mod:`v2a_plugins.audio_encoders.codec_latents`)."""

from __future__ import annotations

import torch
from torch import Tensor

from v2a import AudioEncoder, FeatureSequence
from v2a.registry import default_registry
from v2a_plugins.audio_encoders.codec_latents import CodecLatentsConfig


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
