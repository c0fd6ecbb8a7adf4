"""The ``imagebind`` audio encoder's implementation: ImageBind's audio tower (built from the
visual encoder's shared transformer parts), its Kaldi filterbank windows and weights loading
(the plug-in, its options and its documentation are :mod:`v2a_plugins.audio_encoders.imagebind`)."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import Tensor, nn

from v2a import AudioEncoder, FeatureSequence
from v2a.errors import UserError
from v2a.weights import is_random, load_into
from v2a_plugins.audio_encoders.imagebind import MEL_BINS, SAMPLE_RATE, ImageBindAudioConfig
from v2a_plugins.visual_encoders.imagebind_model import (
    Preprocessor,
    Stem,
    Trunk,
    attach_tower,
    head,
    modality_state,
    tower_head,
)

FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
WINDOW = round(SAMPLE_RATE * FRAME_LENGTH_MS / 1000)  # 400 samples: one fbank frame
FBANK_MEAN = -4.268  # the reference's fixed normalisation of the log-mel values
FBANK_STD = 9.138
LOGIT_SCALE = 20.0  # the released model's audio logit scale (stored as its log)


class LogitScale(nn.Module):
    """Multiplies by ``exp(log_logit_scale)``, at most 100 (a fixed buffer, not learnt)."""

    def __init__(self, scale: float = LOGIT_SCALE):
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(math.log(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.log_logit_scale.exp().clamp(max=100.0)


class Normalize(nn.Module):
    """L2 normalisation over the last axis (no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(x, dim=-1)


def attach_audio_tower(owner: nn.Module, config: ImageBindAudioConfig) -> None:
    """ImageBind's audio preprocessor, trunk, head and postprocessor for ``config``, attached to
    ``owner``."""
    width = config.width
    conv = nn.Conv2d(1, width, kernel_size=config.patch_size, stride=config.patch_stride, bias=False)
    rows, columns = config.patch_grid()
    attach_tower(
        owner, modality="audio",
        preprocessor=Preprocessor(stem=Stem(conv, nn.LayerNorm(width)), patches=rows * columns, dim=width),
        trunk=Trunk(dim=width, depth=config.depth, heads=config.heads, bias_kv=True, pre_norm=False),
        head=head(dim=width, out_dim=config.embed_dim),
        postprocessor=nn.Sequential(Normalize(), LogitScale()),
    )


def window_starts(num_samples: int, *, clips: int, clip_seconds: float) -> list[int]:
    """First samples of the ``clips`` windows ImageBind's clip sampler cuts from ``num_samples``
    samples: start ``i`` is ``i * max(duration - clip, 0) / max(clips - 1, 1)`` seconds (exact
    rationals of the float duration, as pytorchvideo computes), truncated to a whole sample."""
    duration = Fraction(num_samples / SAMPLE_RATE)
    spare = Fraction(max(duration - Fraction(clip_seconds), 0))
    step = spare / max(clips - 1, 1)
    return [int(step * i * SAMPLE_RATE) for i in range(clips)]


def window_fbank(window: Tensor, mel_frames: int) -> Tensor:
    """One window ``[n]`` (at least 400 samples) → normalised log-mel ``[1, 128, mel_frames]``."""
    from torchaudio.compliance import kaldi  # optional dependency: imported when used

    window = window - window.mean()
    fbank = kaldi.fbank(
        window.unsqueeze(0), htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False,
        window_type="hanning", num_mel_bins=MEL_BINS, dither=0.0, frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
    ).T  # [128, frames]
    frames = fbank.shape[1]
    if frames < mel_frames:
        fbank = nn.functional.pad(fbank, (0, mel_frames - frames))  # zeros before normalising
    return ((fbank[:, :mel_frames] - FBANK_MEAN) / FBANK_STD).unsqueeze(0)


class AudioTooShortError(UserError):
    """A clip shorter than one fbank frame."""


class ImageBindAudioEncoder(AudioEncoder):
    """ImageBind-Huge audio embedding: ``wav [b, c, n]`` at 16 kHz → ``[b, 1, embed_dim]``, a
    unit vector per clip (rate ``sample_rate / n``, start 0). See the module docstring."""

    def __init__(self, config: ImageBindAudioConfig | None = None):
        super().__init__()
        config = config or ImageBindAudioConfig()
        self.config = config
        attach_audio_tower(self, config)
        if not is_random(config.weights):
            path, state = modality_state(config.weights, modality="audio", what="ImageBind audio")
            load_into(self, state, path, f"the ImageBind audio tower {audio_text(config)}")
        self.requires_grad_(False)  # a frozen feature extractor
        self.sample_rate = SAMPLE_RATE
        self.dim = config.embed_dim
        self.rate = 1.0  # one step per clip: the rate of a one-second clip's sequence
        self.window_samples = round(config.clip_seconds * SAMPLE_RATE)
        self.eval()

    def fbanks(self, wav: Tensor) -> Tensor:
        """``wav [b, c, n]`` → the windows' normalised log-mels ``[b * clips, 1, 128, mel_frames]``
        (item-major), computed in at least float32."""
        if wav.dim() != 3:
            raise ValueError(f"ImageBindAudioEncoder expects wav [b, c, n], got {tuple(wav.shape)}")
        n = wav.shape[-1]
        if n < WINDOW:
            raise AudioTooShortError(
                f"the ImageBind audio encoder needs at least {WINDOW} samples ({WINDOW / SAMPLE_RATE:.3f} s "
                f"at {SAMPLE_RATE} Hz) per clip, got {n}; pad or lengthen the audio."
            )
        mono = wav.mean(dim=1)
        mono = mono.to(torch.promote_types(mono.dtype, torch.float32))  # the fbank wants float32
        starts = window_starts(n, clips=self.config.clips, clip_seconds=self.config.clip_seconds)
        return torch.stack([
            window_fbank(row[start:start + self.window_samples], self.config.mel_frames)
            for row in mono for start in starts
        ])

    def encode(self, wav: Tensor) -> FeatureSequence:
        fbank = self.fbanks(wav).to(self.modality_preprocessors["audio"].cls_token.dtype)
        windows = self.modality_postprocessors["audio"](tower_head(self, "audio", fbank))
        clip = windows.unflatten(0, (wav.shape[0], self.config.clips)).mean(dim=1)
        values = nn.functional.normalize(clip, dim=-1).unsqueeze(1)  # [b, 1, dim]
        return FeatureSequence(values=values, rate=self.sample_rate / wav.shape[-1], start=0.0)


def audio_text(config: ImageBindAudioConfig) -> str:
    return (f"(mel_frames {config.mel_frames}, width {config.width}, depth {config.depth}, "
            f"embed_dim {config.embed_dim})")

