"""Wav2CLIP: an audio embedding in CLIP's image-embedding space (the Wav2CLIP score in evaluation).

Wav2CLIP (Wu et al., "Wav2CLIP: Learning Robust Audio Representations from CLIP", ICASSP 2022)
distils a frozen CLIP image encoder into an audio network: on VGGSound, a ResNet-18 reads the
spectrogram of 10 s of a clip and an MLP projects its output so that it lands near the mean of
the CLIP image embeddings of the clip's frames. It is written here (the packaged model downloads
its weights by default when built) with the parameter names of the released checkpoint.

Pipeline, for a waveform ``[b, c, n]`` at 16 kHz::

    mono mix [b, n] --(STFT: periodic Hann 512, hop 353, centred, reflect-padded; power)-->
    [b, 1, 257, 1 + n // 353] (frequency x time) --(log(x + 1e-7); minus the clip's mean, over
    its standard deviation + 1e-9)--> --(ResNet-18: 7x7/2 conv, BN, ReLU, 3x3/2 max pool; four
    stages of two basic blocks, the last three halving the size; global average pool)-->
    [b, 512] --(Linear, ReLU, Dropout 0.1, Linear)--> CLIP-space embedding [b, 512]

``encode`` returns it as a sequence of one step, ``[b, 1, dim]``, at rate ``1 / clip seconds``
(``sample_rate / n``) from 0 s, as PANNs' encoder does; the ``rate`` attribute is that of a
one-second clip (1.0). The embedding is not L2-normalised: cosine scores normalise it. A clip
needs at least 257 samples (the reflection padding of the first frame).

One difference from the released code, on purpose: it standardises the log spectrogram with the
mean and standard deviation of the *whole batch*, so one clip's embedding depends on the clips
batched with it. Here each clip is standardised with its own statistics, which is what the
released code does for a batch of one (how its ``embed_audio`` is used on a clip).

Key layout (``weights`` = a path, or ``pretrained``): the released ``Wav2CLIP.pt`` is a flat
state dict of the training module; the audio side is ``audio_encoder.*`` (the ResNet-18: 121
tensors, 11.17 M parameters, 11.18 M values with the batch norms' statistics) and ``audio_transform.sequential.{0,3}.{weight,bias}`` (the MLP).
This module's ``state_dict`` has exactly those names, and the file's other entries (the image
side's MLP, the losses' logit scales) are ignored. A state dict of the packaged model
(``encoder.*``, ``transform.*``) loads too. *Confirmed* from the source of the ``wav2clip`` 0.1.0
package: the two prefixes (its loader keeps ``audio_encoder``/``audio_transform`` entries and
loads them strictly) and the names under them (torchvision-style ``conv1``, ``bn1``,
``layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}``, ``layer{2,3,4}.0.downsample.{0,1}``, the
spectrogram's window as ``spectrogram.window``, no ``fc``; the MLP's Linears at indices 0 and 3).
*Inferred*: that the released file holds nothing else under those prefixes (its strict load
implies it) and that it is not nested under ``state_dict`` (both layouts are accepted). The file
itself was not at hand: nothing is downloaded here. ``pretrained`` fetches it from the GitHub
release through ``torch.hub`` (cached there; no checksum is published, so none is checked).

Frames for the image side: Wav2CLIP's target is the mean of OpenAI CLIP ViT-B/32 image
embeddings (512-d, after CLIP's projection) of the clip's frames, which is what the ``clip``
visual encoder gives with its defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from v2a import AudioEncoder, ComponentSpec, FeatureSequence, hookimpl
from v2a.errors import UserError
from v2a.pretrained import PretrainedFile, torch_hub_file
from v2a.schema import FieldError
from v2a.weights import (
    PRETRAINED, WeightsError, check_finite, is_random, load_checkpoint, load_into, local_file,
)
from v2a_plugins.audio_encoders.panns import with_batch_counts

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 353
LOG_OFFSET = 1e-7  # added to the power before the log
STD_OFFSET = 1e-9  # added to the standard deviation before dividing
RELEASED_WIDTHS = (64, 128, 256, 512)  # ResNet-18's four stages
CLIP_DIM = 512  # CLIP ViT-B/32's image embedding
DROPOUT = 0.1  # in the MLP, between its Linears (training only)
MIN_SAMPLES = N_FFT // 2 + 1  # reflection padding by n_fft // 2 needs more samples than that
RELEASE_URL = ("https://github.com/descriptinc/lyrebird-wav2clip/releases/download/"
               "v0.1.0-alpha/Wav2CLIP.pt")
#: The released file's prefixes, and those of a state dict of the packaged model.
RELEASED_PREFIXES = {"audio_encoder.": "audio_encoder.", "audio_transform.": "audio_transform.",
                     "encoder.": "audio_encoder.", "transform.": "audio_transform."}


@dataclass
class Wav2ClipConfig:
    """Options of the ``wav2clip`` audio encoder; the defaults are the released model.

    ``weights``: ``"none"`` (random), ``"pretrained"`` (the GitHub release, downloaded through
    torch.hub), or a local file in the released layout. ``widths``: the four stages' channels
    (the last one is the ResNet's output). ``dim``: the projection's width (CLIP's embedding).
    """

    weights: str = "none"
    """none (random), pretrained (the GitHub release, through torch.hub) or a local file in the
    released layout"""
    widths: tuple[int, ...] = RELEASED_WIDTHS
    """channels of the four ResNet stages; the last is the ResNet's output"""
    dim: int = CLIP_DIM
    """width of the projection (CLIP's embedding width)"""

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise FieldError("widths", f"must be four positive widths, got {list(self.widths)}")
        if self.dim < 1:
            raise FieldError("dim", f"must be at least 1, got {self.dim}")


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


def wav2clip_properties(config: Wav2ClipConfig) -> dict:
    """The encoder's attributes known without building it (``ComponentSpec.properties``); the
    rate follows the clip length, so it is not declared."""
    return {"sample_rate": SAMPLE_RATE, "dim": config.dim}


def wav2clip_pretrained_files(config: Wav2ClipConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``): the
    GitHub release's ``Wav2CLIP.pt``, into torch.hub's checkpoint folder; no checksum is
    published."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    return [torch_hub_file(what="Wav2CLIP weights (release v0.1.0-alpha)", url=RELEASE_URL,
                           check_hash=False,
                           licence="MIT (lyrebird-wav2clip's LICENSE.md)")]


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="wav2clip", build=Wav2Clip, config=Wav2ClipConfig,
        properties=wav2clip_properties, pretrained_files=wav2clip_pretrained_files,
        description="Wav2CLIP (Wu 2022): 512-d clip embedding in CLIP's image space at 16 kHz",
    ))
