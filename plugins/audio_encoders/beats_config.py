"""The options of the ``beats`` audio encoder (:mod:`v2a_plugins.audio_encoders.beats`), in a
module of their own: the configuration dataclass, and which of its fields shape the model and
which only regularise training."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal


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


REGULARISATION = (
    "dropout", "attention_dropout", "activation_dropout", "dropout_input", "encoder_layerdrop",
    "layer_wise_gradient_decay_ratio",
)
ARCHITECTURE = tuple(
    f.name for f in dataclasses.fields(BeatsConfig) if f.name not in REGULARISATION + ("weights",)
)
