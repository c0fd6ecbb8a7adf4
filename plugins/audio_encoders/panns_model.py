"""The ``panns_cnn14`` audio encoder's implementation: CNN14 in the released parameter names,
its log-mel front end and weights loading (the plug-in, its options and its documentation are
:mod:`v2a_plugins.audio_encoders.panns`)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from v2a import AudioEncoder, FeatureSequence
from v2a.errors import UserError
from v2a.weights import is_random, load_checkpoint, load_into, state_dict_of
from v2a_plugins.audio_encoders.panns import SAMPLE_RATE, PannsConfig, checkpoint_path

# -- the released model's front end (its sizes are in the plug-in module) -------------------------

N_FFT = 1024
HOP = 320
N_MELS = 64
F_MIN = 50.0
F_MAX = 14000.0
AMIN = 1e-10  # power floor before the log
POOLED_BLOCKS = 5  # blocks 1-5 halve time and frequency; block 6 does not pool
MIN_FRAMES = 2**POOLED_BLOCKS  # frames the poolings need to leave one time step
MIN_SAMPLES = (MIN_FRAMES - 1) * HOP  # 9920 samples: 1 + n // 320 >= 32


# -- front end -----------------------------------------------------------------------------------


def windowed_dft(n_fft: int) -> tuple[Tensor, Tensor]:
    """The real and imaginary parts of the one-sided DFT with a periodic Hann window, as
    convolution kernels ``[n_fft // 2 + 1, 1, n_fft]``: ``cos(2 pi k m / N) w[m]`` and
    ``-sin(2 pi k m / N) w[m]`` for bin ``k`` and sample ``m`` (float64 arithmetic)."""
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.int64)[:, None]
    m = torch.arange(n_fft, dtype=torch.int64)[None, :]
    angle = 2 * math.pi * ((k * m) % n_fft).double() / n_fft  # reduced first: exact phases
    real, imag = torch.cos(angle) * window, -torch.sin(angle) * window
    return real.float().unsqueeze(1), imag.float().unsqueeze(1)


def hz_to_slaney_mel(hz: Tensor) -> Tensor:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above
    (27 mels per factor 6.4), 15 mels at 1 kHz."""
    log_step = math.log(6.4) / 27.0
    above = 15.0 + torch.log(hz.clamp(min=1000.0) / 1000.0) / log_step
    return torch.where(hz >= 1000.0, above, hz * 3.0 / 200.0)


def slaney_mel_to_hz(mel: Tensor) -> Tensor:
    """The inverse of :func:`hz_to_slaney_mel`."""
    log_step = math.log(6.4) / 27.0
    above = 1000.0 * torch.exp((mel.clamp(min=15.0) - 15.0) * log_step)
    return torch.where(mel >= 15.0, above, mel * 200.0 / 3.0)


def slaney_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, f_min: float,
                      f_max: float) -> Tensor:
    """``[n_fft // 2 + 1, n_mels]`` triangular filters, evenly spaced on Slaney's mel scale from
    ``f_min`` to ``f_max``, each scaled to unit area in Hz (peak ``2 / (upper - lower)``): the
    filters the released model's log-mel front end uses."""
    edges = torch.linspace(
        float(hz_to_slaney_mel(torch.tensor(f_min, dtype=torch.float64))),
        float(hz_to_slaney_mel(torch.tensor(f_max, dtype=torch.float64))),
        n_mels + 2, dtype=torch.float64,
    )
    hz = slaney_mel_to_hz(edges)
    bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)[:, None]
    lower, centre, upper = hz[:-2], hz[1:-1], hz[2:]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    triangles = rising.minimum(falling).clamp(min=0.0)
    return (triangles * (2.0 / (upper - lower))).float()


class Kernel(nn.Module):
    """Holds one fixed tensor as ``weight`` (the released file stores the DFT kernels as the
    weights of two convolutions, ``conv_real`` and ``conv_imag``)."""

    def __init__(self, weight: Tensor):
        super().__init__()
        self.register_buffer("weight", weight)


class WindowedDFT(nn.Module):
    """The STFT as two strided convolutions (``conv_real``, ``conv_imag``) over the signal."""

    def __init__(self, *, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        real, imag = windowed_dft(n_fft)
        self.conv_real, self.conv_imag = Kernel(real), Kernel(imag)


class Spectrogram(nn.Module):
    """``mono [b, n]`` → power spectrogram ``[b, 1, 1 + n // hop, n_fft // 2 + 1]``: frames
    centred on every ``hop``-th sample, the signal reflected at both ends (in ``mono``'s dtype)."""

    def __init__(self, *, n_fft: int, hop: int):
        super().__init__()
        self.stft = WindowedDFT(n_fft=n_fft, hop=hop)

    def forward(self, mono: Tensor) -> Tensor:
        half = self.stft.n_fft // 2
        padded = F.pad(mono.unsqueeze(1), (half, half), mode="reflect")  # [b, 1, n + n_fft]
        kernels = self.stft.conv_real.weight, self.stft.conv_imag.weight
        real, imag = (F.conv1d(padded, k.to(mono.dtype), stride=self.stft.hop) for k in kernels)
        return (real.square() + imag.square()).transpose(1, 2).unsqueeze(1)  # [b, 1, t, f]


class LogMel(nn.Module):
    """Power spectrogram ``[..., f]`` → ``10 log10(max(power @ melW, 1e-10))`` ``[..., n_mels]``
    (decibels relative to 1, no top-dB clipping)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("melW", slaney_filterbank(
            sample_rate=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, f_min=F_MIN, f_max=F_MAX))

    def forward(self, power: Tensor) -> Tensor:
        return 10.0 * torch.log10((power @ self.melW.to(power.dtype)).clamp(min=AMIN))


# -- network -------------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """Two 3x3 convolutions (no bias), each followed by batch norm and ReLU, then average
    pooling over ``pool`` (time, frequency)."""

    def __init__(self, *, in_channels: int, out_channels: int, pool: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.weight)

    def forward(self, x: Tensor) -> Tensor:  # [b, c, t, f] -> [b, c', t / p, f / p]
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=self.pool) if self.pool != (1, 1) else x


class AudioTooShortError(UserError):
    """A clip too short for CNN14's five poolings."""


class PannsCnn14(AudioEncoder):
    """PANNs CNN14 at 32 kHz: ``encode(wav [b, c, n])`` → the clip embedding ``[b, 1, dim]``
    (rate ``sample_rate / n``, start 0), ``classify(wav)`` → ``[b, classes]`` sigmoid
    probabilities. Channels are mixed to mono. Its ``state_dict`` is the released key layout.

    Implements :class:`v2a.interfaces.AudioClassifier` (``multi_label = True``).
    """

    multi_label = True

    def __init__(self, config: PannsConfig | None = None):
        super().__init__()
        config = config or PannsConfig()
        self.config = config
        self.sample_rate = SAMPLE_RATE
        self.dim = config.channels[-1]
        self.rate = 1.0  # one step per clip: the rate of a one-second clip's sequence
        self.class_names = tuple(f"class_{i:03d}" for i in range(config.classes))
        self.spectrogram_extractor = Spectrogram(n_fft=N_FFT, hop=HOP)
        self.logmel_extractor = LogMel()
        self.bn0 = nn.BatchNorm2d(N_MELS)
        widths = (1, *config.channels)
        for i in range(6):
            pool = (2, 2) if i < POOLED_BLOCKS else (1, 1)
            block = ConvBlock(in_channels=widths[i], out_channels=widths[i + 1], pool=pool)
            self.add_module(f"conv_block{i + 1}", block)
        self.fc1 = nn.Linear(self.dim, self.dim)
        self.fc_audioset = nn.Linear(self.dim, config.classes)
        for linear in (self.fc1, self.fc_audioset):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
        if not is_random(config.weights):
            path, state = released_state(config.weights)
            load_into(self, with_batch_counts(self, state), path, f"PANNs CNN14 {config_text(config)}")

    def log_mel(self, wav: Tensor) -> Tensor:
        """``wav [b, c, n]`` → the front end's log-mel ``[b, 1, 1 + n // 320, 64]``, computed in
        at least float32."""
        if wav.dim() != 3:
            raise ValueError(f"PannsCnn14 expects wav [b, c, n], got {tuple(wav.shape)}")
        n = wav.shape[-1]
        if n < MIN_SAMPLES:
            raise AudioTooShortError(
                f"PANNs CNN14 needs at least {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE:.2f} s "
                f"at {SAMPLE_RATE} Hz) per clip, got {n}; pad or lengthen the audio."
            )
        mono = wav.mean(dim=1)
        mono = mono.to(torch.promote_types(mono.dtype, torch.float32))  # log10 wants float32
        return self.logmel_extractor(self.spectrogram_extractor(mono))

    def embed(self, wav: Tensor) -> Tensor:
        """``wav [b, c, n]`` → the clip embedding ``[b, dim]`` (after fc1 and ReLU)."""
        dtype = self.fc1.weight.dtype
        x = self.log_mel(wav).to(dtype)  # [b, 1, t, 64]
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalised per mel bin
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x)
            x = F.dropout(x, p=0.2, training=self.training)
        x = x.mean(dim=3)  # [b, c, t']: mean over frequency
        x = x.amax(dim=2) + x.mean(dim=2)  # [b, c]: max + mean over time
        x = F.dropout(x, p=0.5, training=self.training)
        return F.relu(self.fc1(x))

    def encode(self, wav: Tensor) -> FeatureSequence:
        embedding = self.embed(wav)
        return FeatureSequence(values=embedding.unsqueeze(1), rate=self.sample_rate / wav.shape[-1],
                               start=0.0)

    def classify(self, wav: Tensor) -> Tensor:
        """``wav [b, c, n]`` → ``[b, classes]`` independent class probabilities (sigmoid)."""
        return torch.sigmoid(self.fc_audioset(self.embed(wav)))


# -- weights -------------------------------------------------------------------------------------


def config_text(config: PannsConfig) -> str:
    return f"(channels {list(config.channels)}, {config.classes} classes)"


def released_state(weights: str) -> tuple[Path, dict[str, Tensor]]:
    """The file a ``weights`` option names and the state dict it holds (its ``"model"`` entry,
    or the whole file when that is a bare state dict)."""
    path = checkpoint_path(weights)
    return path, state_dict_of(load_checkpoint(path), path, what="PANNs CNN14's weights")


def with_batch_counts(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with the batch norms' ``num_batches_tracked`` counters a file saved without them
    lacks (they are read only when training with momentum None)."""
    own = model.state_dict()
    counters = {k: own[k] for k in own if k.endswith(".num_batches_tracked") and k not in state}
    return {**state, **counters}

