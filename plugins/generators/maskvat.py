"""MaskVAT's masked token transformers (plug-ins ``maskvat_adaln``, ``maskvat_seq2seq`` and
``maskvat_hybrid``).

One bidirectional transformer over the audio frames of a codegram, in three variants that differ
only in how the visual conditioning enters (Pascual et al., ECCV 2024; see
``docs/maskvat-notes.md``):

* ``maskvat_adaln``: every block is modulated per frame (shift, scale, gate for attention and
  MLP) by the time-aligned conditioning, AdaLN-Zero as in DiT (Peebles & Xie 2023);
* ``maskvat_seq2seq``: every block cross-attends to the context sequence (the output of the
  fuser's encoder);
* ``maskvat_hybrid``: both.

Design, in the order a frame meets it:

* **Input**: the sum of the ``k`` codebook embeddings of the frame; each level has its own table
  of ``codebook_size + 1`` rows, the last one the learned [MASK] embedding of that level. The
  ``k`` tables are stacked into one ``nn.EmbeddingBag`` (``mode="sum"``), which sums without a
  ``[b, k, l, width]`` intermediate.
* **Positions**: rotary embeddings (Su et al. 2021) on the self-attention queries and keys, plus
  a sinusoidal embedding of each frame's index added to the input: without an absolute position,
  fully masked frames are indistinguishable and cross-attention (Seq2Seq) could not tell which
  moment of the video a frame belongs to. ``max_frames`` bounds both precomputed tables.
* **Blocks**: pre-norm self-attention (fused QKV, no mask: every frame sees every frame), then
  cross-attention (Seq2Seq, Hybrid), then an MLP.
* **Attention kernel** (``attention``): ``scaled_dot_product_attention`` or the same product
  written out (``softmax(q kᵀ / √d) v``, see :func:`explicit_attention`). ``auto`` uses SDPA
  off the CPU and in training (its dropout); for inference on a CPU it times both once per
  process for each shape (:func:`choose_attention`) and keeps the faster: torch's CPU SDPA
  kernel is slower than the written-out form in bfloat16 on some CPUs and faster on others.
* **AdaLN-Zero** (AdaLN, Hybrid): the norms before attention and MLP have no affine parameters;
  per frame, a block's ``SiLU -> Linear(width, 6 * width)`` of the projected aligned conditioning
  gives shift, scale and gate of both branches, and the final norm gets shift and scale the same
  way. These linears start at zero (weights and bias), so every modulated block starts as the
  identity and the conditioning has no effect at initialisation, as in DiT.
* **Cross-attention** (Seq2Seq, Hybrid): queries from the frames, keys and values from the
  context; its output projection starts at zero too, so in all three variants the conditioning
  starts with no effect and gains it in training. A learned "null" context token is always
  present and valid: dropped rows see only that token, and a row whose context is fully padded
  attends to it instead of producing NaN.
* **Output**: one fused ``Linear(width, k * codebook_size)``; the logits are returned as a
  ``[b, k, l, codebook_size]`` view of it (no copy).

**What ``prepare`` computes** (once per video; the sampler reuses it for every step and
candidate): everything that depends on the conditioning alone.

* ``aligned``: the AdaLN modulations of every block and of the final norm, ``[b, l, (6 * layers
  + 2) * width]`` (shift, 1 + scale, gate; ...). Steps the aligned mask marks as padding (no
  video there) and dropped rows use the learned null conditioning vector instead. Memory: for
  the paper-scale recipe that is about 0.5 GB per row of a 10 s clip in fp32; in exchange each
  decoding step does no conditioning matmul (which would cost half as much as the block itself).
* ``context``: the cross-attention keys and values of every block, ``[b, 1 + s, 2 * layers *
  width]``, with the null token first and padded steps zeroed; its ``mask`` marks the valid keys
  (dropped rows: the null token only).

So the prepared sequences are *not* at model width; they are internal to ``predict`` (read them
only through ``predict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import trained_with_v2a

Variant = Literal["adaln", "seq2seq", "hybrid"]

#: The ``attention`` options; ``auto`` resolves to one of the other two (:func:`choose_attention`).
AttentionSetting = Literal["auto", "sdpa", "explicit"]
ATTENTION_SETTINGS: tuple[str, ...] = get_args(AttentionSetting)

#: Which parts of a Conditioning each variant reads: (aligned, context).
VARIANTS: dict[str, tuple[bool, bool]] = {
    "adaln": (True, False),
    "seq2seq": (False, True),
    "hybrid": (True, True),
}


@dataclass
class MaskVATConfig:
    """Options of the MaskVAT generators (the same for the three variants).

    ``n_codebooks`` and ``codebook_size``: the codec's ``k`` and vocabulary (DAC 44 kHz: 9 x 1024).
    ``condition_dim``: width of the fuser's sequences (its ``dim``). ``width``, ``layers``,
    ``heads``: transformer size (1024, 24, 16 *assumed* for the paper); ``heads`` divides
    ``width`` into an even head size. ``ffn_mult``: MLP hidden width over ``width``.
    ``dropout``: on attention weights, the MLP hidden layer and the residual branches.
    ``max_frames``: the longest code sequence accepted (4096 frames = 47.6 s of DAC 44 kHz).
    ``weights``: ``none`` (random initialisation) or the ``generator.safetensors`` a training
    run exports, loaded strictly (training starts from it: fine-tuning).
    """

    n_codebooks: int = 9
    """RVQ levels of the codec (its k)"""
    codebook_size: int = 1024
    """entries per codebook of the codec"""
    condition_dim: int = 512
    """width of the fuser's sequences (its dim)"""
    width: int = 1024
    """transformer width (1024 assumed for the paper)"""
    layers: int = 24
    """transformer layers (24 assumed for the paper)"""
    heads: int = 16
    """attention heads (16 assumed); must divide width into an even head size"""
    ffn_mult: float = 4.0
    """MLP hidden width over width"""
    dropout: float = 0.0
    """dropout on attention weights, the MLP hidden layer and the residual branches"""
    max_frames: int = 4096
    """longest code sequence accepted (4096 frames: 47.6 s of DAC 44 kHz)"""
    weights: str = "none"
    """none (random) or a generator.safetensors exported by v2a train, loaded strictly"""
    attention: AttentionSetting = "auto"
    """attention kernel: auto (the faster one, measured on a CPU), sdpa or explicit (written out)"""

    def __post_init__(self) -> None:
        for name in ("n_codebooks", "codebook_size", "condition_dim", "width", "layers", "heads",
                     "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(
                f"heads ({self.heads}) must divide width ({self.width}) into an even head size "
                "(rotary embeddings rotate pairs of channels)"
            )
        if self.ffn_mult <= 0:
            raise ValueError(f"ffn_mult must be positive, got {self.ffn_mult}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.attention not in ATTENTION_SETTINGS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_SETTINGS)}, got "
                             f"{self.attention!r}")


# -- registration -------------------------------------------------------------------------------


def generator_properties(variant: Variant):
    """``properties(config)`` of one variant (see ``ComponentSpec.properties``)."""

    def properties(config: MaskVATConfig) -> dict:
        uses_aligned, uses_context = VARIANTS[variant]
        return {"n_codebooks": config.n_codebooks, "codebook_size": config.codebook_size,
                "condition_dim": config.condition_dim, "hidden_dim": config.width,
                "uses_aligned": uses_aligned, "uses_context": uses_context}

    return properties


def generator_builder(variant: Variant):
    """``build(config)`` of one variant: a ``MaskVATGenerator``, its module imported on first use."""

    def build(config: MaskVATConfig):
        from v2a_plugins.generators.maskvat_model import MaskVATGenerator  # deferred: torch
        return MaskVATGenerator(config, variant=variant)

    return build


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="generator", name="maskvat_adaln", build=generator_builder("adaln"),
        config=MaskVATConfig, properties=generator_properties("adaln"), state_dict_weights=True,
        pretrained_files=trained_with_v2a("the maskvat_adaln generator"),
        description="MaskVAT-AdaLN: masked token transformer modulated per frame (AdaLN-Zero)",
    ))
    register(ComponentSpec(
        kind="generator", name="maskvat_seq2seq", build=generator_builder("seq2seq"),
        config=MaskVATConfig, properties=generator_properties("seq2seq"), state_dict_weights=True,
        pretrained_files=trained_with_v2a("the maskvat_seq2seq generator"),
        description="MaskVAT-Seq2Seq: masked token transformer cross-attending to the video",
    ))
    register(ComponentSpec(
        kind="generator", name="maskvat_hybrid", build=generator_builder("hybrid"),
        config=MaskVATConfig, properties=generator_properties("hybrid"), state_dict_weights=True,
        pretrained_files=trained_with_v2a("the maskvat_hybrid generator"),
        description="MaskVAT-Hybrid: AdaLN-Zero modulation and cross-attention",
    ))


#: The implementation's names, importable from here (``from v2a_plugins.generators.maskvat
#: import MaskVATGenerator``); each is imported from its module on first use.
_HOMES = {"v2a_plugins.generators.maskvat_model": (
    "Block", "MaskVATGenerator", "SCORE_ELEMENTS", "attention_choices", "choose_attention",
    "explicit_attention", "modulate", "residual", "rotary_table", "rotate", "sdpa_attention",
    "sinusoids", "time_attention", "zero_",
)}
__all__ = ["ATTENTION_SETTINGS", "VARIANTS", "AttentionSetting", "MaskVATConfig", "Variant",
           "generator_builder", "generator_properties", "v2a_register_components",
           *_HOMES["v2a_plugins.generators.maskvat_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
