"""CLIP's text tower as a v2a :class:`~v2a.interfaces.TextEncoder` (plug-in ``clip_text``).

The text half of the CLIP models the visual ``clip`` plug-in embeds frames with: open_clip's own
text transformer and its own tokenizer (``open_clip.tokenizer.SimpleTokenizer``, whose BPE
vocabulary ships inside the open_clip wheel: nothing is downloaded for it). The options
``model`` and ``pretrained`` mean what they mean for ``clip``, so a recipe that gives both plug-ins
the same checkpoint gets text and frame embeddings in one space.

* **Tokens**: the transformer's final hidden states after ``ln_final``, ``[b, t, width]``; the
  real ones run from the start-of-text to the end-of-text token, the tokenizer's padding after
  them is masked (and zero). ``t`` is the longest text of the batch, at most ``max_tokens``
  (the model's context length, 77): the transformer is causal, so a token never sees what
  follows it and running it on fewer padded steps changes nothing.
* **Pooled**: the projected end-of-text hidden state, what open_clip's ``encode_text`` returns
  (L2-normalised with ``normalize``).
* **Truncation**: a text longer than ``max_tokens`` keeps its first tokens and ends with the
  end-of-text token, as open_clip's tokenizer does.
* **Weights** (``weights``): ``"pretrained"`` loads the ``pretrained`` tag through open_clip's
  download-and-cache; a path names a local file (read with :func:`v2a.weights.load_checkpoint`,
  never running code): a whole open_clip/OpenAI CLIP state dict (the vision tower's keys are
  ignored), an open_clip training checkpoint, or this encoder's own state dict; ``"none"`` is
  random initialisation. ``quick_gelu`` follows the ``pretrained`` tag, as for ``clip``.
* **Small towers** (``width``, ``layers``, ``heads``, ``embed_dim``, ``context_length``):
  override the named config, for tests and experiments with random or local weights.
* **Frozen**: a pre-trained feature extractor: no parameter requires grad, and it starts in
  eval mode. Only the text tower is kept.

Models whose text side is a Hugging Face model or tokenizer (e.g. the SigLIP families) are
refused: this plug-in speaks open_clip's own causal text transformer.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import PretrainedFile
from v2a.schema import FieldError
from v2a.weights import PRETRAINED

#: The text-tower options that override the named config.
_TEXT_FIELDS = ("width", "layers", "heads", "context_length")


@dataclass
class ClipTextConfig:
    """Options of the ``clip_text`` text encoder.

    ``model``: an open_clip model name (``open_clip.list_models()``). ``pretrained``: an open_clip
    pretrained tag for that model: what ``weights: pretrained`` downloads, and the weights'
    provenance for ``quick_gelu``. ``weights``: ``"pretrained"``, ``"none"`` or a local file.
    ``normalize``: L2-normalise the pooled vector. ``quick_gelu``: ``None`` follows the
    ``pretrained`` tag. The remaining fields (``None``: the named config's value) shape a text
    tower for random or local weights; ``heads`` must divide the width.
    """

    model: str = "ViT-B-32"
    """an open_clip model name (open_clip.list_models())"""
    pretrained: str = "openai"
    """the open_clip pretrained tag that weights: pretrained downloads"""
    weights: str = PRETRAINED
    """pretrained (downloaded by open_clip), none (random) or the path of a file"""
    normalize: bool = False
    """L2-normalise the pooled vector"""
    quick_gelu: bool | None = None
    """use QuickGELU; null: what the pretrained tag was trained with"""
    width: int | None = None
    """text tower width for random or local weights; null: the named model's"""
    layers: int | None = None
    """text tower layers; null: the named model's"""
    heads: int | None = None
    """text tower attention heads (must divide width); null: the named model's"""
    embed_dim: int | None = None
    """width of the pooled embedding; null: the named model's"""
    context_length: int | None = None
    """most tokens of a text; null: the named model's"""

    def __post_init__(self) -> None:
        for name in (*_TEXT_FIELDS, "embed_dim"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FieldError(name, f"must be a positive integer, got {value}")
        if self.context_length is not None and self.context_length < 2:
            raise FieldError("context_length", "must be at least 2 (start and end of text)")
        if self.heads is not None and self.width is not None and self.width % self.heads:
            raise FieldError("heads", f"({self.heads}) must divide width ({self.width})")

    def text_overrides(self) -> dict:
        """The ``text_cfg`` entries these options change."""
        return {name: getattr(self, name) for name in _TEXT_FIELDS if getattr(self, name) is not None}


#: ``(text width, embed_dim, context length)`` of the open_clip models most used with CLIP
#: (their ``-quickgelu`` twins have the same sizes), so that a recipe learns the widths without
#: importing open_clip. Another model's sizes are known only from the options.
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "ViT-B-32": (512, 512, 77), "ViT-B-16": (512, 512, 77), "ViT-L-14": (768, 768, 77),
    "ViT-L-14-336": (768, 768, 77), "ViT-H-14": (1024, 1024, 77), "ViT-g-14": (1024, 1024, 77),
    "ViT-bigG-14": (1280, 1280, 77), "RN50": (512, 1024, 77), "RN101": (512, 512, 77),
    "RN50x4": (640, 640, 77), "RN50x16": (768, 768, 77), "RN50x64": (1024, 1024, 77),
}


def clip_text_properties(config: ClipTextConfig) -> dict:
    """The encoder attributes ``config`` gives, without building or importing open_clip:
    ``dim``, ``pooled_dim`` and ``max_tokens`` from the options, else from :data:`MODEL_SIZES`."""
    known = MODEL_SIZES.get(config.model.removesuffix("-quickgelu"), (None, None, None))
    sizes = (config.width or known[0], config.embed_dim or known[1],
             config.context_length or known[2])
    return {attr: size for attr, size in zip(("dim", "pooled_dim", "max_tokens"), sizes)
            if size is not None}


def clip_text_pretrained_files(config: ClipTextConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``): the
    same open_clip file as the ``clip`` visual encoder's for this model and tag."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    from v2a_plugins.visual_encoders.clip_model import open_clip_files  # deferred: open_clip
    return open_clip_files(config.model, config.pretrained, part="text tower")


def build_clip_text(config: ClipTextConfig):
    """The ``clip_text`` encoder of ``config`` (its module, torch and open_clip imported on first
    use)."""
    from v2a_plugins.text_encoders.clip_text_model import ClipTextEncoder  # deferred: torch
    return ClipTextEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="text_encoder", name="clip_text", build=build_clip_text, config=ClipTextConfig,
        requires=("open_clip", "torchvision"), install="pip install 'v2a[clip]'",
        properties=clip_text_properties, pretrained_files=clip_text_pretrained_files,
        description="CLIP text tower (open_clip; ViT-B-32): hidden state per token, pooled EOT",
    ))


#: The implementation's names, importable from here; imported from their module on first use.
_HOMES = {"v2a_plugins.text_encoders.clip_text_model": (
    "ClipTextEncoder", "build_clip_model", "text_state", "text_tower_of",
)}
__all__ = ["MODEL_SIZES", "ClipTextConfig", "build_clip_text", "clip_text_pretrained_files",
           "clip_text_properties", "v2a_register_components",
           *_HOMES["v2a_plugins.text_encoders.clip_text_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
