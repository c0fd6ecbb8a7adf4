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

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import PretrainedFile, torch_hub_file
from v2a.schema import FieldError
from v2a.weights import PRETRAINED

SAMPLE_RATE = 16000
RELEASED_WIDTHS = (64, 128, 256, 512)  # ResNet-18's four stages
CLIP_DIM = 512  # CLIP ViT-B/32's image embedding
RELEASE_URL = ("https://github.com/descriptinc/lyrebird-wav2clip/releases/download/"
               "v0.1.0-alpha/Wav2CLIP.pt")


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


def build_wav2clip(config: Wav2ClipConfig):
    """The encoder of ``config`` (``ComponentSpec.build``): the model module is imported here."""
    from v2a_plugins.audio_encoders.wav2clip_model import Wav2Clip  # deferred: torch (the model)

    return Wav2Clip(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="wav2clip", build=build_wav2clip, config=Wav2ClipConfig,
        properties=wav2clip_properties, pretrained_files=wav2clip_pretrained_files,
        description="Wav2CLIP (Wu 2022): 512-d clip embedding in CLIP's image space at 16 kHz",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.audio_encoders.wav2clip_model` on first use.
_HOMES = {"v2a_plugins.audio_encoders.wav2clip_model": (
    "Wav2Clip", "AudioTooShortError", "AudioResNet", "BasicBlock", "Projection", "Spectrogram",
    "released_state", "audio_side", "N_FFT", "HOP", "LOG_OFFSET", "STD_OFFSET", "DROPOUT",
    "MIN_SAMPLES", "RELEASED_PREFIXES",
)}
__all__ = ["Wav2ClipConfig", "SAMPLE_RATE", "RELEASED_WIDTHS", "CLIP_DIM", "RELEASE_URL",
           "wav2clip_properties", "wav2clip_pretrained_files", "build_wav2clip",
           "v2a_register_components", *_HOMES["v2a_plugins.audio_encoders.wav2clip_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
