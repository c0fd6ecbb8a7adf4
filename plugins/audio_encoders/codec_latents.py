"""The ``codec_latents`` audio encoder: the continuous latents of any codec (FDD-style metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
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


def build_codec_latents(config: CodecLatentsConfig):
    """The encoder of ``config`` (``ComponentSpec.build``), which builds the nested codec from
    the default registry; the model module is imported here."""
    from v2a_plugins.audio_encoders.codec_latents_model import CodecLatents  # deferred: torch

    return CodecLatents(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="codec_latents", build=build_codec_latents,
        config=CodecLatentsConfig, properties=codec_latents_properties,
        description="continuous latents of any codec (FDD-style metrics)",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.audio_encoders.codec_latents_model` on first use.
_HOMES = {"v2a_plugins.audio_encoders.codec_latents_model": ("CodecLatents",)}
__all__ = ["CodecLatentsConfig", "codec_latents_properties", "build_codec_latents",
           "v2a_register_components", *_HOMES["v2a_plugins.audio_encoders.codec_latents_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
