"""The ``mel`` audio encoder: a log-mel spectrogram, no weights (metrics, tests)."""

from __future__ import annotations

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports


@dataclass
class MelConfig:
    sample_rate: int = 16000
    """Hz the audio is resampled to before the spectrogram"""
    n_fft: int = 1024
    """STFT size in samples"""
    hop_length: int = 256
    """samples between frames: features come at sample_rate / hop_length per second"""
    n_mels: int = 64
    """mel filters, which is the feature width"""
    f_min: float = 0.0
    """lowest frequency of the filterbank in Hz"""
    f_max: float | None = None
    """highest frequency of the filterbank in Hz; null: sample_rate / 2"""
    floor: float = 1e-5
    """added to the mel energies before the log"""


def mel_properties(config: MelConfig) -> dict:
    """The attributes of the encoder ``config`` builds, known without building it
    (``ComponentSpec.properties``)."""
    return {"sample_rate": config.sample_rate, "dim": config.n_mels,
            "rate": config.sample_rate / config.hop_length}


def build_mel(config: MelConfig):
    """The encoder of ``config`` (``ComponentSpec.build``): the model module is imported here."""
    from v2a_plugins.audio_encoders.mel_model import MelEncoder  # deferred: torch (the model)

    return MelEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="mel", build=build_mel, config=MelConfig,
        properties=mel_properties,
        description="log-mel spectrogram (no weights); metrics, tests",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.audio_encoders.mel_model` on first use.
_HOMES = {"v2a_plugins.audio_encoders.mel_model": ("MelEncoder", "mel_filterbank")}
__all__ = ["MelConfig", "mel_properties", "build_mel", "v2a_register_components",
           *_HOMES["v2a_plugins.audio_encoders.mel_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
