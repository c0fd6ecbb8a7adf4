"""PaSST-S: a clip embedding and AudioSet class probabilities (FD, KL and IS in evaluation).

PaSST (Koutini et al., "Efficient Training of Audio Transformers with Patchout", 2022) is a
ViT over overlapping 16x16 patches of a log-mel spectrogram, trained to tag AudioSet's 527
classes; patchout (dropping patches) acts only in training, so none is applied here. The model
is the AudioSet PaSST-S that av-benchmark's FD/KL/IS use, ``passt_s_swa_p16_128_ap476``,
written here in torch with the parameter names of the released checkpoint (the packaged model,
hear21passt, downloads its weights when built and prints to stdout).

Pipeline, for a waveform ``[b, c, n]`` at 32 kHz, ``n`` up to 10 s::

    mono mix [b, n] --(pre-emphasis y[i] = x[i + 1] - 0.97 x[i]: n - 1 samples)-->
    --(STFT: n_fft 1024, a symmetric 800-sample Hann window centred in it, hop 320, frames
    centred, reflected ends; power)--> [b, 513, t], t = 1 + (n - 1) // 320
    --(128 Kaldi mel filters 0-15000 Hz, none on the Nyquist bin; ln(. + 1e-5); (. + 4.5) / 5)-->
    [b, 128, t] --(conv 16x16, stride 10x10)--> [b, 768, 12, T], T = (t - 16) // 10 + 1 <= 99
    --(+ time embedding cut to T, + frequency embedding; flatten frequency-major; cls and dist
    tokens, each plus its new_pos_embed)--> [b, 2 + 12 T, 768] --(12 pre-norm ViT blocks, norm)-->
    features = (cls + dist) / 2 [b, 768] --(head: LayerNorm, Linear)--> logits [b, 527]

The normalisation ``(ln(mel + 1e-5) + 4.5) / 5`` is the model's own fixed one (no dataset
statistics). The positional embeddings cover 10 s (1000 frames, 99 time patches); a shorter
clip uses the first ``T`` time embeddings, as the model does at inference. A clip longer than
10 s is scored as the HEAR 2021 wrapper of the model scores a scene: the clip, reflected by
5 s at both ends, is cut into 10 s windows every 2.5 s (``n // 80000 + 1`` windows; a tail
shorter than a hop is left out), and the windows' features and logits are averaged.
The shortest clip is 4801 samples (0.15 s: 16 frames, one time patch).

``encode`` returns the features as a sequence of one step, ``[b, 1, 768]``, at rate
``1 / clip seconds`` (``sample_rate / n``) starting at 0 s; the ``rate`` attribute is that of a
one-second clip (1.0). ``classify`` returns ``sigmoid(logits)``: 527 independent probabilities
(``multi_label``), the logits averaged over the windows of a long clip before the sigmoid,
which is taken in float64 so that the logits can be recovered from the probabilities.

Key layout (confirmed by building hear21passt 0.0.26's ``passt_s_swa_p16_128_ap476`` and
listing its state dict; the released file itself was not at hand): 159 tensors, ``cls_token``,
``dist_token`` ``[1, 1, 768]``, ``new_pos_embed`` ``[1, 2, 768]``, ``freq_new_pos_embed``
``[1, 768, 12, 1]``, ``time_new_pos_embed`` ``[1, 768, 1, 99]``, ``patch_embed.proj.*``,
``blocks.{0..11}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*``, ``norm.*``,
``head.0.*`` (LayerNorm), ``head.1.*`` ``[527, 768]`` and ``head_dist.*`` ``[527, 768]``. The
front end has no parameters in the file. ``head_dist`` (the distillation token's classifier
in training) is loaded but not used: the released model classifies the averaged features with
``head``. A file holding the state dict under ``"model"`` loads too, and a 3-D
``patch_embed.proj.weight`` (older PaSST files) is reshaped to the convolution's 4-D shape.

Weights (``weights``): ``"none"`` for random initialisation (not the training's: the heads are
not zeroed, so that a random model's outputs differ between clips); ``"pretrained"`` downloads
the released file (:data:`RELEASE_URL`, about 345 MB, no published checksum) into torch's hub
cache through ``torch.hub.load_state_dict_from_url`` and reads it weights-only; a path names a
local copy (``.pt``/``.pth`` or ``.safetensors``). Class names: ``class_000`` ... ``class_526``,
AudioSet's index order (no label list ships without a download); KL and IS need only the
probabilities.

Small configurations (``depth``, ``dim``, ``heads``, ``mels``) keep the architecture (patch
size, strides, tokens, embeddings, front end) for tests; ``mels`` changes the number of mel
filters and so of frequency patches, ``(mels - 16) // 10 + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import PretrainedFile, torch_hub_file
from v2a.schema import FieldError
from v2a.weights import PRETRAINED

# -- the released model's sizes (the front end's constants are in the model module) --------------

SAMPLE_RATE = 32000
N_MELS = 128
PATCH, STRIDE = 16, 10  # square patches, the same stride in frequency and time
DIM, DEPTH, HEADS = 768, 12, 12

RELEASE_URL = ("https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/"
               "passt-s-f128-p16-s10-ap.476-swa.pt")
CHECKPOINT = RELEASE_URL.rsplit("/", 1)[1]
DOWNLOAD_PAGE = "https://github.com/kkoutini/PaSST/releases/tag/v0.0.1-audioset"


@dataclass
class PasstConfig:
    """Options of the ``passt`` audio encoder; the defaults are the released PaSST-S."""

    weights: str = "none"
    """none (random), pretrained (downloads the released PaSST-S) or the path of the file"""
    depth: int = DEPTH
    """transformer blocks"""
    dim: int = DIM
    """token width, which is the feature width"""
    heads: int = HEADS
    """attention heads (must divide dim)"""
    mels: int = N_MELS
    """mel filters (at least one patch: 16)"""

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise FieldError("depth", f"must be at least 1, got {self.depth}")
        if self.heads < 1 or self.dim < 1 or self.dim % self.heads:
            raise FieldError("dim", f"must be a positive multiple of heads ({self.heads}), got {self.dim}")
        if self.mels < PATCH:
            raise FieldError("mels", f"must be at least {PATCH} (one patch), got {self.mels}")


def passt_properties(config: PasstConfig) -> dict:
    """The attributes of the encoder ``config`` builds, known without building it
    (``ComponentSpec.properties``): the sample rate and the feature width. The rate follows
    the clip length, so it is not declared."""
    return {"sample_rate": SAMPLE_RATE, "dim": config.dim}


def passt_pretrained_files(config: PasstConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``): the
    released file, into torch.hub's checkpoint folder; no checksum is published (its name
    carries none)."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    return [torch_hub_file(what="PaSST-S AudioSet weights (passt-s-f128-p16-s10-ap.476-swa)",
                           url=RELEASE_URL, check_hash=False,
                           licence="unknown here (see github.com/kkoutini/PaSST)")]


def build_passt(config: PasstConfig):
    """The encoder of ``config`` (``ComponentSpec.build``): the model module is imported here."""
    from v2a_plugins.audio_encoders.passt_model import Passt  # deferred: torch (the model)

    return Passt(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="passt", build=build_passt, config=PasstConfig,
        properties=passt_properties, pretrained_files=passt_pretrained_files,
        description="PaSST-S (Koutini 2022, passt_s_swa_p16_128_ap476): 768-d clip features + "
                    "527 AudioSet probabilities at 32 kHz; weights none | pretrained | path",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.audio_encoders.passt_model` on first use.
_HOMES = {"v2a_plugins.audio_encoders.passt_model": (
    "Passt", "AudioTooShortError", "LogMel", "PatchEmbed", "Attention", "Mlp", "Block",
    "frames", "patches", "kaldi_mel", "kaldi_mel_filters", "config_text", "download_released",
    "released_state", "with_4d_patch_kernel", "PREEMPHASIS", "N_FFT", "WINDOW", "HOP", "F_MIN",
    "F_MAX", "LOG_OFFSET", "NORM_SHIFT", "NORM_SCALE", "MLP_RATIO", "AUDIOSET_CLASSES",
    "BLOCK_EPS", "HEAD_EPS", "WINDOW_SAMPLES", "SCENE_HOP", "SCENE_PAD", "TIME_PATCHES",
    "MIN_SAMPLES",
)}
__all__ = ["PasstConfig", "SAMPLE_RATE", "N_MELS", "PATCH", "STRIDE", "DIM", "DEPTH", "HEADS",
           "RELEASE_URL", "CHECKPOINT", "DOWNLOAD_PAGE", "passt_properties",
           "passt_pretrained_files", "build_passt", "v2a_register_components",
           *_HOMES["v2a_plugins.audio_encoders.passt_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
