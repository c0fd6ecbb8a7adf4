"""ImageBind-Huge's audio tower as a v2a :class:`~v2a.interfaces.AudioEncoder` (plug-in
``imagebind``): one 1024-d unit embedding per clip, in the space of the ``imagebind`` visual
encoder (:mod:`v2a_plugins.visual_encoders.imagebind`, whose model module holds the shared
transformer parts); their cosine is evaluation's IB-score.

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

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.schema import FieldError
from v2a_plugins.visual_encoders.imagebind import EMBED_DIM, imagebind_pretrained_files

SAMPLE_RATE = 16000
MEL_BINS = 128


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


def audio_properties(config: ImageBindAudioConfig) -> dict:
    """The attributes ``config`` gives, without building (``ComponentSpec.properties``); the rate
    follows the clip length, so it is not declared."""
    return {"sample_rate": SAMPLE_RATE, "dim": config.embed_dim}


def build_imagebind_audio(config: ImageBindAudioConfig):
    """The encoder of ``config`` (``ComponentSpec.build``): the model module is imported here."""
    from v2a_plugins.audio_encoders.imagebind_model import ImageBindAudioEncoder  # deferred: torch

    return ImageBindAudioEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="imagebind", build=build_imagebind_audio,
        config=ImageBindAudioConfig, properties=audio_properties,
        pretrained_files=imagebind_pretrained_files,
        requires=("torchaudio",), install="pip install 'v2a[beats]'",
        description="ImageBind-Huge audio tower (Girdhar 2023): 1024-d unit clip embedding at "
                    "16 kHz, for IB-score; local checkpoint, non-commercial licence",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.audio_encoders.imagebind_model` on first use.
_HOMES = {"v2a_plugins.audio_encoders.imagebind_model": (
    "ImageBindAudioEncoder", "AudioTooShortError", "LogitScale", "Normalize",
    "attach_audio_tower", "window_starts", "window_fbank", "audio_text", "FRAME_LENGTH_MS",
    "FRAME_SHIFT_MS", "WINDOW", "FBANK_MEAN", "FBANK_STD", "LOGIT_SCALE",
)}
__all__ = ["ImageBindAudioConfig", "SAMPLE_RATE", "MEL_BINS", "audio_properties",
           "build_imagebind_audio", "v2a_register_components",
           *_HOMES["v2a_plugins.audio_encoders.imagebind_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
