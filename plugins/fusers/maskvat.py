"""MaskVAT's condition fuser (plug-in ``maskvat``): visual streams → the generator's conditioning.

The visual streams (CLIP at 8 Hz, S3D at 3.125 Hz, ... any rates, lengths and padding) are each
projected by an MLP to ``dim``; then (see ``docs/maskvat-notes.md``):

* **aligned** (for AdaLN; ``aligned: true``): every projected stream is resampled by linear
  interpolation to the codec frame rate over ``num_frames`` frames starting at 0 s
  (:meth:`~v2a.sequences.FeatureSequence.resample`, which never interpolates from padding), the
  streams are summed (a stream contributes zero where it is padded) and layer-normalised: the
  paper's "regular length adaptation". The result's mask marks the frames at least one stream
  covers; ``None`` when no stream had padding.
* **context** (for cross-attention; ``context: true``): the projected streams are concatenated
  in time, each step tagged with a learned embedding of its stream and a sinusoidal embedding of
  its time in seconds (``start + i / rate``, so that streams of different rates line up), and
  encoded by ``context_layers`` pre-norm transformer encoder layers (the Seq2Seq encoder)
  that attend only to valid steps. Its mask is the streams' masks concatenated (``None`` when no
  stream had padding); its ``rate`` is nominal: the sum of the streams' rates (context steps per
  second of video), its ``start`` the earliest stream start.

Padded input steps are set to zero before anything reads them, so they never change the result.
Streams in the input that are not named in ``streams`` are ignored (a recipe may extract more
streams than the fuser uses, e.g. for the reranker).

**Text** (``text_dim`` and ``text_pooled_dim`` set: the fuser ``accepts_text``): the prompt's
token features are projected by an MLP to ``dim``, tagged with a learned text embedding and
appended to the context sequence (with their mask) before the context encoder; the pooled
vector, projected, is added to every step of the aligned sequence before its layer norm. A row
whose video is dropped (``drop_video``) uses learned null video conditioning instead of its
streams: one null vector at every aligned step, and one null context token (the first context
step, valid only in such rows) with its video steps masked out. A row whose text is dropped
(``drop_text``, or no ``text`` at all) gets neither text tokens (masked out) nor the pooled
vector. With every row's video dropped the streams may be absent (text-only generation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import trained_with_v2a


@dataclass
class MaskVATFuserConfig:
    """Options of the ``maskvat`` fuser.

    ``streams``: the visual streams it reads, by name (the recipe's ``visual_encoders``), with
    their feature widths. ``dim``: width of the conditioning (the generator's ``condition_dim``).
    ``aligned`` / ``context``: which conditioning to produce (AdaLN needs aligned, Seq2Seq
    context, Hybrid both). ``context_layers``, ``heads``: the context encoder (``heads`` divides
    ``dim``); ``context_layers: 0`` keeps the tagged projections as they are. ``dropout``: in the
    MLPs and the encoder. ``text_dim`` / ``text_pooled_dim``: the recipe's text encoder's
    ``dim`` and ``pooled_dim`` (both or neither; see the module doc). ``weights``: ``none`` (random initialisation) or the
    ``fuser.safetensors`` a training run exports, loaded strictly (training starts from it).
    """

    streams: dict[str, int] = field(default_factory=lambda: {"clip": 512, "s3d": 1024})
    """the visual streams read (names of the recipe's visual_encoders) and their feature widths"""
    dim: int = 512
    """width of the conditioning (the generator's condition_dim)"""
    aligned: bool = True
    """produce the frame-aligned conditioning (AdaLN and Hybrid generators need it)"""
    context: bool = True
    """produce the context sequence (Seq2Seq and Hybrid generators need it)"""
    context_layers: int = 2
    """layers of the context encoder; 0 keeps the tagged projections as they are"""
    heads: int = 8
    """attention heads of the context encoder (must divide dim)"""
    dropout: float = 0.0
    """dropout in the MLPs and the context encoder"""
    text_dim: int | None = None
    """width of the text encoder's tokens (its dim); null: no text"""
    text_pooled_dim: int | None = None
    """width of the text encoder's pooled vector (its pooled_dim); set with text_dim"""
    weights: str = "none"
    """none (random) or a fuser.safetensors exported by v2a train, loaded strictly"""

    def __post_init__(self) -> None:
        if not self.streams:
            raise ValueError("streams must name at least one visual stream and its width")
        for name, width in self.streams.items():
            if width < 1:
                raise ValueError(f"stream {name!r} must have a positive width, got {width}")
        if self.dim < 1 or self.context_layers < 0 or self.heads < 1:
            raise ValueError("dim and heads must be positive and context_layers not negative")
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        if not (self.aligned or self.context):
            raise ValueError("set aligned, context or both to true: the fuser must produce one")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if (self.text_dim is None) != (self.text_pooled_dim is None):
            raise ValueError("set text_dim and text_pooled_dim together (the text encoder's dim "
                             "and pooled_dim), or neither")
        if self.text_dim is not None and min(self.text_dim, self.text_pooled_dim) < 1:
            raise ValueError("text_dim and text_pooled_dim must be positive")


def fuser_properties(config: MaskVATFuserConfig) -> dict:
    """The attributes of the fuser ``config`` builds, known without building it
    (``ComponentSpec.properties``)."""
    return {"dim": config.dim, "stream_dims": dict(config.streams),
            "provides_aligned": config.aligned, "provides_context": config.context,
            "accepts_text": config.text_dim is not None}


def build_fuser(config: MaskVATFuserConfig):
    """The ``maskvat`` fuser of ``config`` (its module, and torch, imported on first use)."""
    from v2a_plugins.fusers.maskvat_model import MaskVATFuser  # deferred: torch
    return MaskVATFuser(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="fuser", name="maskvat", build=build_fuser, config=MaskVATFuserConfig,
        properties=fuser_properties, state_dict_weights=True,
        pretrained_files=trained_with_v2a("the maskvat fuser"),
        description="MaskVAT fuser: stream MLPs, aligned sum at the codec rate, context encoder",
    ))


#: The implementation's names, importable from here (``from v2a_plugins.fusers.maskvat import
#: MaskVATFuser``); each is imported from its module on first use.
_HOMES = {"v2a_plugins.fusers.maskvat_model": (
    "MAX_PERIOD", "MIN_PERIOD", "EncoderLayer", "MaskVATFuser", "mlp", "time_embedding",
)}
__all__ = ["MaskVATFuserConfig", "build_fuser", "fuser_properties", "v2a_register_components",
           *_HOMES["v2a_plugins.fusers.maskvat_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
