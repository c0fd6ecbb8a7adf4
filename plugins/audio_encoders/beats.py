"""BEATs audio encoder: frame-level features from Microsoft's audio transformer.

BEATs (Chen et al., "BEATs: Audio Pre-Training with Acoustic Tokenizers", 2022) is a ViT over
16x16 patches of a 128-bin Kaldi filterbank (16 kHz, 25 ms window, 10 ms shift). The model below
is written here (there is no package to depend on) with the parameter names of the official
code (github.com/microsoft/unilm, ``beats/BEATs.py`` and ``beats/backbone.py``), so that an
official checkpoint, a torch file holding ``cfg`` (the hyper-parameters) and ``model`` (the state
dict), loads as it is.

Pipeline, for a waveform ``[b, c, n]`` at 16 kHz::

    mono mix [b, n] --(Kaldi fbank, x 2**15, normalised)--> fbank [b, frames, 128]
    --(conv 16x16 patches)--> [b, t * 8, 512] --(layer norm, linear)--> [b, t * 8, 768]
    --(conv positional embedding, 12 post-LN layers with gated relative position bias)-->
    tokens [b, t * 8, 768] --(mean over the 8 frequency patches of each time step)--> [b, t, 768]

Output: ``t = frames // 16`` steps (trailing frames that do not fill a patch are dropped, as in
the reference), ``rate = 100 / 16 = 6.25`` steps per second and ``start`` = the centre of the
first patch's time span, ``(15 * 160 + 400) / 2 / 16000 = 0.0875`` s (step ``i`` describes the
audio around ``0.0875 + i * 0.16`` s).

Weights (``weights`` option): ``"none"`` for random initialisation; a local path to an official
checkpoint (``BEATs_iter3_plus_AS2M.pt`` etc., from github.com/microsoft/unilm/tree/master/beats),
read with ``torch.load(weights_only=True)``; a bare state dict of this model (``.safetensors`` or
``.pt``) is accepted too, its architecture then being the options. There is no library download,
so ``"pretrained"`` explains where to get a file. Fine-tuned checkpoints load as well: their
AudioSet classifier (``predictor.*``) is dropped, the features come from the encoder. (The
official files are expected to hold only plain data: the reference reads ``cfg`` as a dict of
numbers, strings and booleans. Should one be refused as unsafe, convert it once where you trust
it: ``c = torch.load(p, weights_only=False); torch.save({"cfg": dict(c["cfg"]), "model":
c["model"]}, out)``.)

A checkpoint's ``cfg`` decides the architecture: the architecture options take its values (keys it
lacks take the reference code's defaults, as ``BEATsConfig`` would), and an architecture option
changed from its default to a value the checkpoint contradicts is an error naming the field, so
that a recipe never runs a different model than it says. The regularisation options (dropouts,
layer drop, layer-wise gradient decay) only act in training and are always taken from the
options, so a fine-tuning recipe can set them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import nothing_to_download
from v2a.weights import downloaded_file, is_random

SAMPLE_RATE = 16000
FRAME_SHIFT_MS = 10.0
DOWNLOAD_PAGE = "https://github.com/microsoft/unilm/tree/master/beats"


@dataclass
class BeatsConfig:
    """Options of the ``beats`` audio encoder; defaults are the released iter3 / iter3+ models."""

    weights: str = "none"
    """none (random) or the path of an official BEATs checkpoint or a state dict of this model"""

    # architecture (a checkpoint's cfg overrides these; the names are the reference's cfg keys)
    input_patch_size: int = 16
    """side of the square filterbank patches (frames x mel bins)"""
    embed_dim: int = 512
    """width of the patch embedding"""
    conv_bias: bool = False
    """use a bias in the patch embedding convolution"""
    encoder_layers: int = 12
    """transformer layers"""
    encoder_embed_dim: int = 768
    """transformer width, which is the feature width"""
    encoder_ffn_embed_dim: int = 3072
    """hidden width of each layer's feed-forward network"""
    encoder_attention_heads: int = 12
    """attention heads per layer"""
    activation_fn: Literal["gelu", "relu"] = "gelu"
    """activation of the feed-forward networks"""
    layer_norm_first: bool = False
    """pre-LN layers; the released models are post-LN"""
    deep_norm: bool = True
    """DeepNet residual scaling by (2 * layers) ** 0.25 (post-LN only)"""
    conv_pos: int = 128
    """kernel size of the convolutional positional embedding"""
    conv_pos_groups: int = 16
    """groups of the convolutional positional embedding"""
    relative_position_embedding: bool = True
    """add a T5-style bucketed relative position bias, shared by all layers"""
    num_buckets: int = 320
    """buckets of the relative position bias"""
    max_distance: int = 800
    """distance (in patches) beyond which relative positions share the last bucket"""
    gru_rel_pos: bool = True
    """gate the relative position bias by the query, as WavLM does"""

    # regularisation, training only (never read from a checkpoint)
    dropout: float = 0.0
    """dropout on the residual branches (training only)"""
    attention_dropout: float = 0.0
    """dropout on the attention weights (training only)"""
    activation_dropout: float = 0.0
    """dropout after the feed-forward activation (training only)"""
    dropout_input: float = 0.0
    """dropout on the patch embeddings (training only)"""
    encoder_layerdrop: float = 0.0
    """probability of skipping a layer (training only)"""
    layer_wise_gradient_decay_ratio: float = 0.6
    """gradient scale per layer in the backward pass (training only)"""


#: The options that act only in training (always taken from the options, never from a
#: checkpoint's cfg) and the ones that shape the model (a checkpoint's cfg decides those).
REGULARISATION = (
    "dropout", "attention_dropout", "activation_dropout", "dropout_input", "encoder_layerdrop",
    "layer_wise_gradient_decay_ratio",
)
ARCHITECTURE = tuple(
    f.name for f in dataclasses.fields(BeatsConfig) if f.name not in REGULARISATION + ("weights",)
)


def checkpoint_path(weights: str) -> Path:
    """The local checkpoint a ``weights`` option other than ``none`` names; ``pretrained`` is
    refused with where to get a file (no library publishes these weights)."""
    return downloaded_file(weights, model="BEATs", page=DOWNLOAD_PAGE,
                           file="a checkpoint (for example BEATs_iter3_plus_AS2M.pt)")


def beats_properties(config: BeatsConfig) -> dict:
    """The attributes of the encoder ``config`` builds, known without building it
    (``ComponentSpec.properties``).

    The sample rate is fixed. ``dim`` and ``rate`` follow ``encoder_embed_dim`` and
    ``input_patch_size``: with random weights always; with a checkpoint only when the option
    differs from its default (a checkpoint's cfg may replace a default, and must agree with an
    option that was set).
    """
    defaults = BeatsConfig()

    def known(name: str) -> bool:
        return is_random(config.weights) or getattr(config, name) != getattr(defaults, name)

    props: dict = {"sample_rate": SAMPLE_RATE}
    if known("encoder_embed_dim"):
        props["dim"] = config.encoder_embed_dim
    if known("input_patch_size"):
        props["rate"] = 1000.0 / FRAME_SHIFT_MS / config.input_patch_size
    return props


def beats_pretrained_files(config: BeatsConfig) -> list:
    """Nothing to download (see ``ComponentSpec.pretrained_files``): no library publishes
    these weights; ``weights: pretrained`` is refused as building refuses it."""
    return nothing_to_download(config.weights, checkpoint_path)


def build_beats(config: BeatsConfig):
    """The encoder of ``config`` (``ComponentSpec.build``): the model module is imported here."""
    from v2a_plugins.audio_encoders.beats_model import BeatsEncoder  # deferred: torch (the model)

    return BeatsEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="beats", build=build_beats, config=BeatsConfig,
        properties=beats_properties, pretrained_files=beats_pretrained_files,
        requires=("torchaudio",), install="pip install 'v2a[beats]'",
        description="BEATs transformer (Microsoft 2022): 768-d features at 6.25 Hz; local checkpoint",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.audio_encoders.beats_model` on first use.
_HOMES = {"v2a_plugins.audio_encoders.beats_model": (
    "BeatsEncoder", "BEATs", "AudioTooShortError", "MultiheadAttention", "ScaleGrad",
    "TransformerEncoder", "TransformerSentenceEncoderLayer", "WeightNormConv1d", "TrimLast",
    "activation", "filterbank", "num_frames", "relative_position_buckets", "resolve_weights",
    "merge_checkpoint_cfg", "load_beats_state", "REFERENCE_DEFAULTS", "MEL_BINS", "WINDOW", "HOP",
    "FRAME_LENGTH_MS", "FBANK_MEAN", "FBANK_STD",
)}
__all__ = ["BeatsConfig", "ARCHITECTURE", "REGULARISATION", "SAMPLE_RATE", "FRAME_SHIFT_MS",
           "DOWNLOAD_PAGE", "checkpoint_path", "beats_properties", "beats_pretrained_files",
           "build_beats", "v2a_register_components",
           *_HOMES["v2a_plugins.audio_encoders.beats_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
