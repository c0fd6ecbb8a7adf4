"""The ``wav2clip`` audio encoder's implementation: the spectrogram, ResNet-18 and projection
in the released parameter names, and weights loading (the plug-in, its options and its
documentation are :mod:`v2a_plugins.audio_encoders.wav2clip`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from v2a import AudioEncoder, FeatureSequence
from v2a.errors import UserError
from v2a.weights import (
    PRETRAINED, WeightsError, check_finite, is_random, load_checkpoint, load_into, local_file,
)
from v2a_plugins.audio_encoders.panns_model import with_batch_counts
from v2a_plugins.audio_encoders.wav2clip import RELEASE_URL, SAMPLE_RATE, Wav2ClipConfig

N_FFT = 512
HOP = 353
LOG_OFFSET = 1e-7  # added to the power before the log
STD_OFFSET = 1e-9  # added to the standard deviation before dividing
DROPOUT = 0.1  # in the MLP, between its Linears (training only)
MIN_SAMPLES = N_FFT // 2 + 1  # reflection padding by n_fft // 2 needs more samples than that
#: The released file's prefixes, and those of a state dict of the packaged model.
RELEASED_PREFIXES = {"audio_encoder.": "audio_encoder.", "audio_transform.": "audio_transform.",
                     "encoder.": "audio_encoder.", "transform.": "audio_transform."}


# -- network -------------------------------------------------------------------------------------


class Spectrogram(nn.Module):
    """``mono [b, n]`` → power spectrogram ``[b, 1, 257, 1 + n // 353]`` (frequency, time); the
    window is a buffer (``window``), as in the released file."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True))

    def forward(self, mono: Tensor) -> Tensor:
        spec = torch.stft(mono, n_fft=N_FFT, hop_length=HOP, window=self.window.to(mono.dtype),
                          center=True, pad_mode="reflect", return_complex=True)
        return spec.abs().square().unsqueeze(1)


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions (no bias) with batch norm, ReLU between, and
    a shortcut (a strided 1x1 convolution + batch norm, ``downsample``, where the shape changes)."""

    def __init__(self, *, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class AudioResNet(nn.Module):
    """The spectrogram and ResNet-18 of the released ``audio_encoder``: ``mono [b, n]`` →
    ``[b, widths[-1]]``."""

    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        self.spectrogram = Spectrogram()
        self.conv1 = nn.Conv2d(1, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        channels = widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(BasicBlock(in_channels=channels, out_channels=width, stride=stride),
                                  BasicBlock(in_channels=width, out_channels=width, stride=1))
            self.add_module(f"layer{i + 1}", stage)
            channels = width
        for module in self.modules():  # the released model's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, mean=1.0, std=0.02)
                nn.init.zeros_(module.bias)

    def standardised_log_power(self, mono: Tensor) -> Tensor:
        """``[b, 1, 257, t]``: each clip's log power minus its mean, over its (unbiased)
        standard deviation, in at least float32."""
        mono = mono.to(torch.promote_types(mono.dtype, torch.float32))
        x = torch.log(self.spectrogram(mono) + LOG_OFFSET)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / (std + STD_OFFSET)

    def forward(self, mono: Tensor) -> Tensor:
        x = self.standardised_log_power(mono).to(self.conv1.weight.dtype)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean(dim=(2, 3))  # global average pool


class Projection(nn.Module):
    """The released ``audio_transform``: Linear, ReLU, Dropout, Linear (``sequential.{0,3}``)."""

    def __init__(self, *, in_dim: int, dim: int):
        super().__init__()
        self.sequential = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Dropout(DROPOUT),
                                        nn.Linear(dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.sequential(x)


class AudioTooShortError(UserError):
    """A clip shorter than the spectrogram's first frame needs."""


class Wav2Clip(AudioEncoder):
    """Wav2CLIP at 16 kHz: ``encode(wav [b, c, n])`` → the CLIP-space clip embedding
    ``[b, 1, dim]`` (rate ``sample_rate / n``, start 0). Channels are mixed to mono. Its
    ``state_dict`` is the released file's audio side (``audio_encoder.*``, ``audio_transform.*``)."""

    def __init__(self, config: Wav2ClipConfig | None = None):
        super().__init__()
        config = config or Wav2ClipConfig()
        self.config = config
        self.sample_rate = SAMPLE_RATE
        self.dim = config.dim
        self.rate = 1.0  # one step per clip: the rate of a one-second clip's sequence
        self.audio_encoder = AudioResNet(tuple(config.widths))
        self.audio_transform = Projection(in_dim=config.widths[-1], dim=config.dim)
        if not is_random(config.weights):
            where, state = released_state(config.weights)
            load_into(self, with_batch_counts(self, audio_side(state, where)), where,
                      f"Wav2CLIP (widths {list(config.widths)}, dim {config.dim})")

    def embed(self, wav: Tensor) -> Tensor:
        """``wav [b, c, n]`` → the CLIP-space embeddings ``[b, dim]``."""
        if wav.dim() != 3:
            raise ValueError(f"Wav2Clip expects wav [b, c, n], got {tuple(wav.shape)}")
        if wav.shape[-1] < MIN_SAMPLES:
            raise AudioTooShortError(
                f"Wav2CLIP needs at least {MIN_SAMPLES} samples at {SAMPLE_RATE} Hz per clip, got "
                f"{wav.shape[-1]}; pad or lengthen the audio.")
        return self.audio_transform(self.audio_encoder(wav.mean(dim=1)))

    def encode(self, wav: Tensor) -> FeatureSequence:
        return FeatureSequence(values=self.embed(wav).unsqueeze(1),
                               rate=self.sample_rate / wav.shape[-1], start=0.0)


# -- weights -------------------------------------------------------------------------------------


def released_state(weights: str) -> tuple[str, Mapping]:
    """Where the weights come from (the URL or the file) and what it holds: the GitHub release
    through ``torch.hub`` for ``pretrained`` (only then is anything downloaded), else the local
    file, read without running code."""
    if weights.strip().lower() != PRETRAINED:
        path = local_file(weights, what="Wav2CLIP",
                          hint=f"The released file is Wav2CLIP.pt from {RELEASE_URL}.")
        return str(path), load_checkpoint(path)
    try:
        state = torch.hub.load_state_dict_from_url(RELEASE_URL, map_location="cpu",
                                                   weights_only=True, progress=False)
    except Exception as exc:
        raise WeightsError(
            f"could not download the published Wav2CLIP weights from {RELEASE_URL} "
            f"({type(exc).__name__}: {exc}); download the file on a machine with internet and "
            "give its path as the weights option") from None
    check_finite(state, RELEASE_URL)
    return RELEASE_URL, state


def audio_side(loaded: object, where: str) -> dict[str, Tensor]:
    """The audio encoder's and projection's tensors of a checkpoint, under this module's names
    (see :data:`RELEASED_PREFIXES`); the file's other entries are left out."""
    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else loaded
    found: dict[str, Tensor] = {}
    if isinstance(state, Mapping):
        for key, value in state.items():
            prefix = next((p for p in RELEASED_PREFIXES if str(key).startswith(p)), None)
            if prefix is not None and isinstance(value, Tensor):
                found[RELEASED_PREFIXES[prefix] + str(key)[len(prefix):]] = value
    if not found:
        raise WeightsError(f"{where} holds no Wav2CLIP audio encoder (no tensors named "
                           "audio_encoder.* or encoder.*), so it is not a Wav2CLIP checkpoint; give "
                           "Wav2CLIP.pt or a state dict in its layout")
    return found

