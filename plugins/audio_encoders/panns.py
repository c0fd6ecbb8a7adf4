"""PANNs CNN14: a clip embedding and AudioSet class probabilities (FD, KL and IS in evaluation).

CNN14 (Kong et al., "PANNs: Large-Scale Pretrained Audio Neural Networks for Audio Pattern
Recognition", 2020) is a VGG-like convolutional network trained to tag AudioSet's 527 classes.
It is written here (the packaged inference code downloads files when imported, see below) with
the parameter names of the released model, so that the released checkpoint loads as it is.

Pipeline, for a waveform ``[b, c, n]`` at 32 kHz::

    mono mix [b, n] --(reflect-padded STFT: periodic Hann, n_fft 1024, hop 320, power)-->
    [b, 1, t, 513] --(64 Slaney mel filters 50-14000 Hz, 10 log10(max(., 1e-10)))--> [b, 1, t, 64]
    --(bn0: batch norm per mel bin)--> --(6 conv blocks, 2x2 average pooling after the first
    five)--> [b, 2048, t / 32, 2] --(mean over frequency; max + mean over time)--> [b, 2048]
    --(fc1, ReLU)--> embedding [b, 2048] --(fc_audioset, sigmoid)--> probabilities [b, 527]

``t = 1 + n // 320`` frames (centred); a clip needs ``31 * 320 = 9920`` samples (0.31 s) so that
the five poolings leave one time step. ``encode`` returns the clip embedding as a sequence of one
step, ``[b, 1, 2048]``, at rate ``1 / clip seconds`` (``sample_rate / n``) starting at 0 s: one
step that describes the whole clip. The ``rate`` attribute is that of a one-second clip (1.0).
``classify`` returns the 527 independent sigmoid probabilities (``multi_label``).

Key layout (``weights`` = a path): the released ``Cnn14_mAP=0.431.pth`` holds the state dict
under ``"model"``; a bare state dict (``.pth`` or ``.safetensors``) loads too. The names are
``spectrogram_extractor.stft.conv_real.weight`` and ``...conv_imag.weight`` (``[513, 1, 1024]``,
the windowed DFT as convolution kernels), ``logmel_extractor.melW`` (``[513, 64]``), ``bn0.*``,
``conv_block{1..6}.{conv1,conv2}.weight`` (3x3, no bias) and ``.{bn1,bn2}.*``, ``fc1.*`` and
``fc_audioset.*``. They are confirmed against the source of panns-inference 0.1.1 and
torchlibrosa 0.1.0, whose model loads the released file strictly from its ``"model"`` entry; the
file itself was not at hand (nothing is downloaded here). The front end's kernels are computed
here and replaced by the file's when it has them, so the released values are used. Should the
file be refused as unsafe (training state beside the weights), convert it once where you trust
it: ``c = torch.load(p, weights_only=False); torch.save({"model": c["model"]}, out)``.

Left out: SpecAugment and mixup, which act only in training the classifier. Class names: no
maintained package ships AudioSet's label list without downloading it (panns-inference fetches
it from the web when imported), so ``class_names`` are ``class_000`` ... ``class_526``, in
AudioSet's index order; KL divergence and the Inception Score need only the probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import nothing_to_download
from v2a.schema import FieldError
from v2a.weights import downloaded_file

# -- the released model's sizes (the front end's constants are in the model module) --------------

SAMPLE_RATE = 32000
RELEASED_CHANNELS = (64, 128, 256, 512, 1024, 2048)
AUDIOSET_CLASSES = 527

CHECKPOINT = "Cnn14_mAP=0.431.pth"
DOWNLOAD_PAGE = "https://zenodo.org/record/3987831"


@dataclass
class PannsConfig:
    """Options of the ``panns_cnn14`` audio encoder; the defaults are the released model."""

    weights: str = "none"
    """none (random) or the path of Cnn14_mAP=0.431.pth or a state dict in its layout"""
    channels: tuple[int, ...] = RELEASED_CHANNELS
    """widths of the six convolution blocks; the last is the feature width"""
    classes: int = AUDIOSET_CLASSES
    """outputs of the AudioSet classifier layer"""

    def __post_init__(self) -> None:
        if len(self.channels) != 6 or min(self.channels) < 1:
            raise FieldError("channels", f"must be six positive widths, got {list(self.channels)}")
        if self.classes < 1:
            raise FieldError("classes", f"must be at least 1, got {self.classes}")


def checkpoint_path(weights: str) -> Path:
    """The local file a ``weights`` option other than ``none`` names; ``pretrained`` is refused
    with where to get the released file (no library publishes these weights)."""
    return downloaded_file(weights, model="PANNs CNN14", file=CHECKPOINT, page=DOWNLOAD_PAGE)


def panns_properties(config: PannsConfig) -> dict:
    """The attributes of the encoder ``config`` builds, known without building it
    (``ComponentSpec.properties``): the sample rate and the embedding width (the file must have
    that width: a checkpoint of another shape is refused). The rate follows the clip length, so
    it is not declared."""
    return {"sample_rate": SAMPLE_RATE, "dim": config.channels[-1]}


def panns_pretrained_files(config: PannsConfig) -> list:
    """Nothing to download (see ``ComponentSpec.pretrained_files``): no library publishes
    these weights; ``weights: pretrained`` is refused as building refuses it."""
    return nothing_to_download(config.weights, checkpoint_path)


def build_panns(config: PannsConfig):
    """The encoder of ``config`` (``ComponentSpec.build``): the model module is imported here."""
    from v2a_plugins.audio_encoders.panns_model import PannsCnn14  # deferred: torch (the model)

    return PannsCnn14(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="panns_cnn14", build=build_panns, config=PannsConfig,
        properties=panns_properties, pretrained_files=panns_pretrained_files,
        description="PANNs CNN14 (Kong 2020): 2048-d clip embedding + 527 AudioSet "
                    "probabilities at 32 kHz; local checkpoint",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.audio_encoders.panns_model` on first use.
_HOMES = {"v2a_plugins.audio_encoders.panns_model": (
    "PannsCnn14", "AudioTooShortError", "ConvBlock", "Kernel", "WindowedDFT", "Spectrogram",
    "LogMel", "windowed_dft", "hz_to_slaney_mel", "slaney_mel_to_hz", "slaney_filterbank",
    "config_text", "released_state", "with_batch_counts", "N_FFT", "HOP", "N_MELS", "F_MIN",
    "F_MAX", "AMIN", "POOLED_BLOCKS", "MIN_FRAMES", "MIN_SAMPLES",
)}
__all__ = ["PannsConfig", "SAMPLE_RATE", "RELEASED_CHANNELS", "AUDIOSET_CLASSES", "CHECKPOINT",
           "DOWNLOAD_PAGE", "checkpoint_path", "panns_properties", "panns_pretrained_files",
           "build_panns", "v2a_register_components",
           *_HOMES["v2a_plugins.audio_encoders.panns_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
