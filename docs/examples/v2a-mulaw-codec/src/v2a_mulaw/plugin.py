"""The module v2a loads through this package's entry point (``[project.entry-points.v2a]``).

It describes the component and imports no torch: the options (:class:`MulawConfig`), what the
codec will say about itself (:func:`mulaw_properties`) and the hook. v2a imports every installed
plug-in's entry-point module for ``v2a plugins``, ``v2a recipe check`` and ``v2a recipe show``,
which never build anything, so the codec itself (:mod:`v2a_mulaw.codec`, which needs torch) is
imported by ``build`` only, when a recipe builds it. A codec that needs a heavy library of its
own would also name it in ``requires``; this one needs nothing beyond v2a (and the torch v2a
brings).
"""

from __future__ import annotations

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl


@dataclass
class MulawConfig:
    """The options a recipe may set: ``codec: {plugin: mulaw, sample_rate: 16000, bits: 8}``."""

    sample_rate: int = 16000
    """Hz of encode's input and decode's output"""
    bits: int = 8
    """bits per code: 2**bits codes, μ = 2**bits - 1"""

    def __post_init__(self) -> None:
        # v2a checks the types; ranges are ours. A ValueError here is reported against the
        # recipe by `v2a recipe check`, before anything is built.
        if not 1 <= self.bits <= 16:
            raise ValueError(f"bits must be between 1 and 16, got {self.bits}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")


def mulaw_properties(config: MulawConfig) -> dict:
    """What a codec built from ``config`` will say about itself, worked out from the config
    alone: v2a reads it to check a recipe (and resolve ``${codec.n_codebooks}``) before
    building anything. The conformance kit checks it against the built codec."""
    return {
        "sample_rate": config.sample_rate,
        "channels": 1,
        "frame_rate": float(config.sample_rate),
        "n_codebooks": 1,
        "codebook_size": 2**config.bits,
        "latent_dim": 1,
    }


def build_codec(config: MulawConfig):
    """The codec for ``config``; its module (and torch) is imported only now."""
    from v2a_mulaw.codec import MulawCodec

    return MulawCodec(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="codec",
        name="mulaw",
        build=build_codec,  # build(config: MulawConfig) -> MulawCodec
        config=MulawConfig,
        properties=mulaw_properties,  # the attributes it will have, from the config alone
        description="μ-law companding, one code per sample (G.711 style; no weights)",
    ))
