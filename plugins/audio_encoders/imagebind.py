"""ImageBind-Huge's audio tower as a v2a :class:`~v2a.interfaces.AudioEncoder` (plug-in
``imagebind``): one 1024-d unit embedding per clip, in the space of the ``imagebind`` visual
encoder (:mod:`v2a_plugins.visual_encoders.imagebind`, which holds the shared transformer
parts); their cosine is evaluation's IB-score.

Written here from the ImageBind paper (Girdhar et al. 2023) and its public description (the
reference code is CC BY-NC-SA 4.0, so none of it is used), with the released checkpoint's
parameter names. Pipeline, for a waveform ``[b, c, n]`` at 16 kHz::

    mono mix --(3 windows of 2 s, evenly spread: starts 0, (n - 2 s) / 2, n - 2 s; the clip
    itself when shorter)--> each window minus its mean --(Kaldi fbank: 128 mels, 25 ms Hann
    window, 10 ms shift, HTK-compatible, no energy, on the [-1, 1] waveform)--> [128, frames]
    --(zero-padded or cut to 204 frames, (x + 4.268) / 9.138)--> [1, 128, 204]
    --(Conv2d 16x16 stride 10 without bias: 12 x 19 patches, LayerNorm)--> cls token, learnt
    positions [1, 229, 768] --(12 blocks of 768, 12 heads, attention with a learnt key/value
    bias token)--> LayerNorm, cls token, Linear 768 -> 1024 without bias, L2 normalisation,
    logit scale --(mean over the 3 windows, L2 normalisation)--> [1024]

``encode`` returns that embedding as a sequence of one step, ``[b, 1, 1024]``, at rate
``sample_rate / n`` from 0 s (one step describes the whole clip, as for ``panns_cnn14``); the
``rate`` attribute is that of a one-second clip (1.0). The window starts follow ImageBind's clip
sampler (pytorchvideo's constant clips per video, with its rational arithmetic and truncation to
whole samples), so the windows are those the reference cuts. The logit scale (``exp`` of the
stored ``log_logit_scale``, 20 in the released model) multiplies every window's embedding
alike, so it cancels in the final normalisation; it is kept for the key layout. Stereo is mixed
to mono (the reference reads the first channel). A clip needs at least one fbank frame (400
samples).

Weights (``weights``): ``none`` (random), or the local path of ``imagebind_huge.pth`` (see the
visual encoder's docstring: one file for all modalities); this tower loads the
``modality_*.audio.*`` keys and ignores the rest. **Licence: the ImageBind weights are CC
BY-NC-SA 4.0, for non-commercial use only.** Key layout (confirmed against the reference model
built on the meta device, ``.briefs/eval-deps.md``): ``modality_preprocessors.audio.cls_token
[1, 1, 768]``, ``.rgbt_stem.proj.weight [768, 1, 16, 16]``, ``.rgbt_stem.norm_layer.*``,
``.pos_embedding_helper.pos_embed [1, 229, 768]``; ``modality_trunks.audio.blocks.{0..11}.attn.
{in_proj_weight [2304, 768], in_proj_bias, bias_k, bias_v, out_proj.*}``, ``.norm_1.*``,
``.norm_2.*``, ``.mlp.fc1.* [3072, 768]``, ``.mlp.fc2.*`` (no pre-transformer LayerNorm);
``modality_heads.audio.0.*``, ``modality_heads.audio.2.weight [1024, 768]``;
``modality_postprocessors.audio.1.log_logit_scale`` (a scalar). Drop-path is left out (training
only); the tower is frozen and starts in eval mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor, nn

from v2a import AudioEncoder, ComponentSpec, FeatureSequence, hookimpl
from v2a.errors import UserError
from v2a.schema import FieldError
from v2a.weights import is_random, load_into
from v2a_plugins.visual_encoders.imagebind import (
    imagebind_pretrained_files,
    EMBED_DIM,
    Preprocessor,
    Stem,
    Trunk,
    attach_tower,
    head,
    modality_state,
    tower_head,
)

SAMPLE_RATE = 16000
MEL_BINS = 128
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
WINDOW = round(SAMPLE_RATE * FRAME_LENGTH_MS / 1000)  # 400 samples: one fbank frame
FBANK_MEAN = -4.268  # the reference's fixed normalisation of the log-mel values
FBANK_STD = 9.138
LOGIT_SCALE = 20.0  # the released model's audio logit scale (stored as its log)


@dataclass
class ImageBindAudioConfig:
    """Options of the ``imagebind`` audio encoder; the defaults are ImageBind-Huge.

    ``clips`` windows of ``clip_seconds`` per item, averaged. ``mel_frames``: fbank frames per
    window after padding or cutting. The rest shapes the tower (smaller sizes for tests).
    """

    weights: str = "none"
    """none (random) or the path of imagebind_huge.pth (or this tower's state dict)"""
    clips: int = 3
    """windows embedded per item, spread over it and averaged"""
    clip_seconds: float = 2.0
    """seconds of audio in each window"""
    mel_frames: int = 204
    """filterbank frames of a window after padding or cutting"""
    patch_size: int = 16
    """side of the square filterbank patches"""
    patch_stride: int = 10
    """stride of the patches along both axes"""
    width: int = 768
    """transformer width"""
    depth: int = 12
    """transformer blocks"""
    heads: int = 12
    """attention heads (must divide width)"""
    embed_dim: int = EMBED_DIM
    """width of the joint ImageBind embedding the tower projects to"""

    def __post_init__(self) -> None:
        if not self.clip_seconds > 0:
            raise FieldError("clip_seconds", f"must be positive, got {self.clip_seconds}")
        for name in ("clips", "patch_size", "patch_stride", "width", "depth", "heads", "embed_dim"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be a positive integer, got {getattr(self, name)}")
        if self.mel_frames < self.patch_size:
            raise FieldError("mel_frames", f"must hold one patch of {self.patch_size} frames, got {self.mel_frames}")
        if self.width % self.heads:
            raise FieldError("heads", f"must divide width {self.width}, got {self.heads}")

    def patch_grid(self) -> tuple[int, int]:
        """Patches along the mel bins and along the frames (12 x 19 for ImageBind-Huge)."""
        along = lambda extent: (extent - self.patch_size) // self.patch_stride + 1  # noqa: E731
        return along(MEL_BINS), along(self.mel_frames)


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


def audio_properties(config: ImageBindAudioConfig) -> dict:
    """The attributes ``config`` gives, without building (``ComponentSpec.properties``); the rate
    follows the clip length, so it is not declared."""
    return {"sample_rate": SAMPLE_RATE, "dim": config.embed_dim}


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="imagebind", build=ImageBindAudioEncoder,
        config=ImageBindAudioConfig, properties=audio_properties,
        pretrained_files=imagebind_pretrained_files,
        requires=("torchaudio",), install="pip install 'v2a[beats]'",
        description="ImageBind-Huge audio tower (Girdhar 2023): 1024-d unit clip embedding at "
                    "16 kHz, for IB-score; local checkpoint, non-commercial licence",
    ))
