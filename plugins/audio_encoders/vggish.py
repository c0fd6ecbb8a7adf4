"""The ``vggish`` audio encoder: VGGish embeddings, the features of the Fréchet Audio Distance.

VGGish (Hershey et al., "CNN architectures for large-scale audio classification", ICASSP 2017)
is a VGG-like network over 0.96 s log-mel patches; FAD (Kilgour et al., 2019) is the Fréchet
distance between the 128-d embeddings of two sets of clips. The model is written here, with the
parameter names of torchvggish (github.com/harritaylor/torchvggish, the PyTorch port of the
TensorFlow release that FAD implementations load), so that its checkpoint loads as it is.

Pipeline, for a waveform ``[b, c, n]`` at 16 kHz::

    mono mix [b, n] --(400-sample periodic-Hann frames every 160 samples, 512-point FFT
    magnitude, 64 triangular mel bands 125-7500 Hz, log(mel + 0.01))--> log-mel [b, frames, 64]
    --(non-overlapping examples of 96 frames)--> [b * t, 1, 96, 64]
    --(3x3 convolutions 64, pool, 128, pool, 256, 256, pool, 512, 512, pool; ReLU after each)-->
    [b * t, 512, 6, 4] --(flatten in (time, mel, channel) order, fully connected 4096, 4096, 128)-->
    embeddings [b, t, 128] --(optional: PCA whitening, clip to [-2, 2], 8-bit quantisation)-->

Output: ``t = frames // 96`` steps with ``frames = 1 + (n - 400) // 160`` (the reference frames
without padding and drops what does not fill a whole example), at ``rate = 16000 / (96 * 160) =
1 / 0.96`` Hz; ``start`` = the centre of the first example's span, ``(95 * 160 + 400) / 2 / 16000
= 0.4875`` s. The first example needs 15600 samples (0.975 s: 96 hops plus the window's tail),
each further one 15360 more; **a clip shorter than 15600 samples gives no steps** (``[b, 0,
128]``), as in the reference, so it adds nothing to a Fréchet distance.

What FAD uses (the default here): the 128-d output of the last fully connected layer with no
activation and no postprocessing. That is the TensorFlow definition's ``vggish/embedding``
(``fc2`` has no activation) and what the ``frechet_audio_distance`` package (and audioldm_eval,
which follows it) computes by default: ``use_pca=False`` and ``use_activation=False``, which
drop torchvggish's PCA step and the ReLU torchvggish puts after the last layer. The options
``embedding_relu`` and ``postprocess`` restore those (``postprocess`` gives the 0..255 values of
the released AudioSet embeddings).

Weights (``weights`` option):

* ``none``: random initialisation (PyTorch's defaults; the PCA is then the identity with zero
  means, so ``postprocess`` only clips and quantises);
* a path to a state dict in torchvggish's layout (``vggish-10086976.pth``, from the torchvggish
  releases on GitHub). Keys, confirmed from torchvggish's source: ``features.{0,3,6,8,11,13}.
  {weight,bias}`` (the convolutions, indices of its ``nn.Sequential`` counting ReLUs and pools),
  ``embeddings.{0,2,4}.{weight,bias}`` (the linear layers), and, in the full model of
  torchvggish's GitHub version, ``pproc.pca_matrix`` ``[128, 128]`` and ``pproc.pca_means``
  ``[128, 1]``. This component's own ``state_dict()`` has exactly these names, so a
  ``.safetensors`` of it loads too. (torchvggish 0.2 on PyPI keeps the PCA as plain attributes
  ``pproc._pca_matrix`` / ``_pca_means``, outside its state dict.)
* ``pretrained``: torchvggish's own download (``torchvggish.vggish()``, cached by torch.hub),
  when torchvggish is installed (``pip install 'v2a[vggish]'``).

With ``postprocess``, the PCA comes from the weights file's ``pproc.*`` tensors, or else from
``pca_weights``: torchvggish's ``vggish_pca_params-970ea276.pth`` or the TensorFlow release's
``vggish_pca_params.npz`` (read with ``allow_pickle=False``), both holding ``pca_eigen_vectors``
``[128, 128]`` and ``pca_means`` (128 values): the names are confirmed from the reference code;
that the ``.pth`` holds tensors rather than NumPy arrays is inferred (torch's weights-only
loader, which v2a uses, refuses NumPy arrays: use the ``.npz`` then).
"""

from __future__ import annotations

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import PretrainedFile, torch_hub_file
from v2a.weights import PRETRAINED

# -- the sizes its declaration needs (the reference's other constants: the model module) -----

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms frames, examples do not overlap
EMBEDDING_DIM = 128
EXAMPLE_HOP_SAMPLES = EXAMPLE_FRAMES * HOP  # 15360
RATE = SAMPLE_RATE / EXAMPLE_HOP_SAMPLES  # 1 / 0.96 Hz

DOWNLOAD_PAGE = "https://github.com/harritaylor/torchvggish/releases"
#: What ``torchvggish.vggish()`` downloads through torch.hub (its ``model_urls``): the network,
#: and the PCA its ``postprocess`` applies. Each name carries its SHA-256 prefix.
TORCHVGGISH_URLS = {
    "vggish": "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
              "vggish-10086976.pth",
    "pca": "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
           "vggish_pca_params-970ea276.pth",
}


# -- options --------------------------------------------------------------------------------------


@dataclass
class VggishConfig:
    """Options of the ``vggish`` audio encoder; the defaults are the released model as FAD uses it."""

    weights: str = "none"
    """none (random), pretrained (needs torchvggish) or the path of a state dict"""
    postprocess: bool = False
    """apply PCA whitening and 8-bit quantisation, as the released AudioSet embeddings do"""
    pca_weights: str = ""
    """the PCA file used with postprocess when weights holds no pproc.* tensors"""
    embedding_relu: bool = False
    """keep torchvggish's ReLU after the 128-d layer (FAD drops it)"""
    width_divisor: int = 1
    """for tests: divide the convolution and hidden widths (not the 128) by this"""


def vggish_properties(config: VggishConfig) -> dict:
    """The attributes of the encoder ``config`` builds, known without building it
    (``ComponentSpec.properties``): none depends on the options."""
    return {"sample_rate": SAMPLE_RATE, "dim": EMBEDDING_DIM, "rate": RATE}


def vggish_pretrained_files(config: VggishConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``):
    torchvggish's release files, into torch.hub's checkpoint folder where torchvggish looks for
    them (fetched with torch.hub's own download, so torchvggish need not be installed to
    prefetch them); the PCA too with ``postprocess``."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    licence = "unknown here (torchvggish ships no licence; ported from tensorflow/models)"
    files = [torch_hub_file(what="VGGish weights (torchvggish v0.1)",
                            url=TORCHVGGISH_URLS["vggish"], check_hash=True, licence=licence)]
    if config.postprocess:
        files.append(torch_hub_file(what="VGGish PCA parameters (torchvggish v0.1)",
                                    url=TORCHVGGISH_URLS["pca"], check_hash=True,
                                    licence=licence))
    return files


def build_vggish(config: VggishConfig):
    """The encoder of ``config`` (``ComponentSpec.build``): the model module is imported here."""
    from v2a_plugins.audio_encoders.vggish_model import VggishEncoder  # deferred: torch (the model)

    return VggishEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="vggish", build=build_vggish, config=VggishConfig,
        properties=vggish_properties, pretrained_files=vggish_pretrained_files,
        description="VGGish (Hershey et al. 2017): 128-d embeddings per 0.96 s, the FAD features",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.audio_encoders.vggish_model` on first use.
_HOMES = {"v2a_plugins.audio_encoders.vggish_model": (
    "VggishEncoder", "Postprocessor", "conv_stack", "flatten_channels_last", "quantise",
    "hz_to_mel", "mel_matrix", "num_frames", "num_examples", "spectrum_magnitude", "log_mel",
    "download_pretrained", "load_pca", "resolve_weights", "WINDOW", "FFT_SIZE", "MEL_BANDS",
    "MEL_MIN_HZ", "MEL_MAX_HZ", "LOG_OFFSET", "HIDDEN", "QUANTIZE_MIN", "QUANTIZE_MAX", "LAYOUT",
    "POOLED_SIZE", "EXAMPLE_SAMPLES", "START",
)}
__all__ = ["VggishConfig", "SAMPLE_RATE", "HOP", "EXAMPLE_FRAMES", "EMBEDDING_DIM",
           "EXAMPLE_HOP_SAMPLES", "RATE", "DOWNLOAD_PAGE", "TORCHVGGISH_URLS",
           "vggish_properties", "vggish_pretrained_files", "build_vggish",
           "v2a_register_components", *_HOMES["v2a_plugins.audio_encoders.vggish_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
