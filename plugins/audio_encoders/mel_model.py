"""The ``mel`` audio encoder's implementation: the log-mel spectrogram (the plug-in, its options
and its documentation are :mod:`v2a_plugins.audio_encoders.mel`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from v2a import AudioEncoder, FeatureSequence
from v2a_plugins.audio_encoders.mel import MelConfig


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> Tensor:
    """``[n_fft // 2 + 1, n_mels]`` triangular filters on the HTK mel scale (area not normalised)."""
    hz_to_mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = hz[:-2], hz[1:-1], hz[2:]
    rising = (bins[:, None] - lower) / (centre - lower)
    falling = (upper - bins[:, None]) / (upper - centre)
    return rising.minimum(falling).clamp(min=0).float()


class MelEncoder(AudioEncoder):
    """Log-mel spectrogram of the mono mix: ``[b, c, n]`` → ``[b, n // hop + 1, n_mels]``.

    Frames are centred: feature ``i`` describes time ``i * hop_length / sample_rate``.
    """

    def __init__(self, config: MelConfig):
        super().__init__()
        self.config = config
        self.sample_rate = config.sample_rate
        self.dim = config.n_mels
        self.rate = config.sample_rate / config.hop_length
        f_max = config.f_max if config.f_max is not None else config.sample_rate / 2
        fb = mel_filterbank(config.n_fft, config.n_mels, config.sample_rate, config.f_min, f_max)
        self.register_buffer("filterbank", fb, persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def encode(self, wav: Tensor) -> FeatureSequence:
        mono = wav.mean(dim=1)  # [b, n]
        spec = torch.stft(
            mono, n_fft=self.config.n_fft, hop_length=self.config.hop_length,
            window=self.window.to(mono.dtype), center=True, pad_mode="constant",
            return_complex=True,
        )  # [b, f, t]
        power = spec.abs().pow(2).transpose(1, 2)  # [b, t, f]
        mel = power @ self.filterbank.to(power.dtype)  # [b, t, n_mels]
        return FeatureSequence(values=torch.log(mel + self.config.floor), rate=self.rate)
