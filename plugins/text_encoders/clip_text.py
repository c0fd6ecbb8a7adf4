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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from v2a import ComponentSpec, TextEncoder, TextFeatures, hookimpl
from v2a.errors import UserError, suggestion
from v2a.pretrained import PretrainedFile
from v2a.schema import FieldError
from v2a.weights import (
    PRETRAINED,
    WeightsError,
    is_random,
    load_checkpoint,
    load_into,
    local_file,
)
from v2a_plugins.visual_encoders.clip import _quiet_random_init, open_clip_files, pretrained_model

#: A minimal vision tower for models whose vision tower is discarded at once (open_clip builds
#: both towers).
_UNUSED_VISION_TOWER = dict(image_size=16, patch_size=16, width=8, layers=1, head_width=8)
#: The text-tower options that override the named config.
_TEXT_FIELDS = ("width", "layers", "heads", "context_length")
#: The text parts of an open_clip CLIP model this encoder keeps, under the names (and so the
#: state-dict keys) open_clip gives them.
_PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


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


def text_state(checkpoint, path) -> dict[str, Tensor]:
    """The text tower's state dict, keyed as :class:`ClipTextEncoder` keys it, from a CLIP
    checkpoint in any of the accepted layouts."""
    state = checkpoint
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # an open_clip training checkpoint
    if not isinstance(state, Mapping) or not any(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors, so it is not a CLIP checkpoint")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
    if any(k.startswith("text.") for k in state):  # a model with its text tower in `.text`
        return {k.removeprefix("text."): v for k, v in state.items() if k.startswith("text.")}
    return {k: v for k, v in state.items() if k.split(".")[0] in _PARTS}


# -- building ---------------------------------------------------------------------------------------


def _model_kwargs(config: ClipTextConfig, named: dict, tag: dict) -> dict:
    """The ``open_clip.create_model`` keywords that shape the model ``config`` asks for."""
    kwargs: dict = {}
    text = config.text_overrides()
    if config.heads is not None and config.width is None and named["text_cfg"]["width"] % config.heads:
        raise UserError(f"heads ({config.heads}) must divide the text width of {config.model} "
                        f"({named['text_cfg']['width']}); give a width too")
    if text:
        kwargs["text_cfg"] = {**named["text_cfg"], **text}
    if config.embed_dim is not None:
        kwargs["embed_dim"] = config.embed_dim
    quick_gelu = config.quick_gelu if config.quick_gelu is not None else tag.get("quick_gelu")
    if quick_gelu:
        kwargs["force_quick_gelu"] = True  # before open_clip's check of the tag, which then agrees
    elif quick_gelu is not None:
        kwargs["quick_gelu"] = False
    return kwargs


def build_clip_model(config: ClipTextConfig):
    """The open_clip CLIP model ``config`` names, with its pre-trained weights for ``weights:
    pretrained`` (else randomly initialised, with a token vision tower)."""
    import open_clip

    named = open_clip.get_model_config(config.model)
    if named is None:
        raise UserError(
            f"open_clip has no model named {config.model!r}; "
            f"{suggestion(config.model, open_clip.list_models(), 'models')}"
        )
    text_cfg = named.get("text_cfg", {})
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise UserError(
            f"the open_clip model {config.model} has a Hugging Face text tower or tokenizer, "
            "which clip_text does not support; choose a CLIP model with open_clip's own text "
            "transformer (ViT-B-32, ViT-L-14, RN50, ...)"
        )
    tag = open_clip.get_pretrained_cfg(config.model, config.pretrained)
    kwargs = _model_kwargs(config, named, tag)
    if config.weights.strip().lower() != PRETRAINED:
        with _quiet_random_init():
            return open_clip.create_model(config.model, pretrained=None,
                                          vision_cfg=_UNUSED_VISION_TOWER, **kwargs)
    if kwargs.keys() & {"text_cfg", "embed_dim"}:
        raise UserError(
            "width, layers, heads, embed_dim and context_length shape a new text tower, which "
            "the published weights do not fit; use them with weights 'none' or a local checkpoint"
        )
    return pretrained_model(open_clip, config.model, config.pretrained, tag, kwargs)


def text_tower_of(model, name: str):
    """The module holding ``model``'s text parts (the model itself, or its ``.text``), checked to
    be a causal transformer pooled at the end-of-text token."""
    tower = getattr(model, "text", model)
    pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", None))
    if getattr(tower, "attn_mask", None) is None or pool not in ("argmax", "eos") or any(
            getattr(tower, part, None) is None for part in _PARTS[:-1]):
        raise UserError(
            f"the open_clip model {name} has no causal text transformer pooled at the end-of-text "
            "token, which clip_text needs; choose a CLIP model (ViT-B-32, ViT-L-14, RN50, ...)"
        )
    return tower


# -- the encoder ------------------------------------------------------------------------------------


class ClipTextEncoder(TextEncoder):
    """open_clip's CLIP text tower behind the :class:`~v2a.interfaces.TextEncoder` contract.

    ``dim`` is the transformer's width, ``pooled_dim`` the joint embedding's (``embed_dim``),
    ``max_tokens`` the context length. Its state dict has open_clip's own key names for the text
    parts (``token_embedding.weight``, ``transformer.…``, ``text_projection``, ...).
    """

    def __init__(self, config: ClipTextConfig):
        from open_clip.tokenizer import SimpleTokenizer

        super().__init__()
        self.config = config
        model = build_clip_model(config)
        tower = text_tower_of(model, config.model)
        for part in _PARTS:
            setattr(self, part, getattr(tower, part))
        self.register_buffer("attn_mask", tower.attn_mask, persistent=False)  # [ctx, ctx] causal
        del model, tower  # the vision tower and the logit scale go here

        self.max_tokens = int(self.positional_embedding.shape[0])
        self.tokenizer = SimpleTokenizer(context_length=self.max_tokens)
        if len(self.tokenizer.encoder) != self.token_embedding.num_embeddings:
            raise UserError(
                f"the text tower of {config.model} has {self.token_embedding.num_embeddings} "
                f"token embeddings, but open_clip's tokenizer has {len(self.tokenizer.encoder)} "
                "tokens; clip_text needs a model built for that tokenizer"
            )
        self.dim = int(self.positional_embedding.shape[1])
        self.pooled_dim = int(self._project(self.positional_embedding[:1]).shape[-1])
        if not (is_random(config.weights) or config.weights.strip().lower() == PRETRAINED):
            path = local_file(config.weights, what=f"the CLIP {config.model} text tower",
                              hint="open_clip's open_clip_pytorch_model.bin or "
                                   "open_clip_model.safetensors both work.")
            load_into(self, text_state(load_checkpoint(path), path), path,
                      f"the CLIP {config.model} text tower")
        self.requires_grad_(False)  # a frozen feature extractor
        self.eval()

    def _project(self, hidden: Tensor) -> Tensor:
        """Hidden states ``[..., width]`` → the joint embedding space ``[..., pooled_dim]``."""
        projection = self.text_projection
        if projection is None:
            return hidden
        return projection(hidden) if isinstance(projection, nn.Module) else hidden @ projection

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids ``[b, t]`` (``t``: the longest text, start and end of text included) and
        each text's number of real tokens ``[b]``, on the CPU."""
        ids = self.tokenizer(list(texts), context_length=self.max_tokens)  # [b, max_tokens]
        lengths = (ids == self.tokenizer.eot_token_id).int().argmax(dim=1) + 1
        length = int(lengths.max()) if len(texts) else 1
        return ids[:, :length], lengths

    def encode(self, texts: Sequence[str]) -> TextFeatures:
        """``b`` texts → hidden states ``[b, t, width]`` (padding zero) and pooled ``[b, embed_dim]``."""
        ids, lengths = self.tokenize(texts)
        device, t = self.positional_embedding.device, ids.shape[1]
        ids, lengths = ids.to(device), lengths.to(device)
        x = self.token_embedding(ids) + self.positional_embedding[:t]
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask[:t, :t]))  # [b, t, width]
        rows = torch.arange(ids.shape[0], device=device)
        pooled = self._project(x[rows, lengths - 1])  # the end-of-text token's state
        if self.config.normalize:
            pooled = F.normalize(pooled, dim=-1)
        mask = torch.arange(t, device=device) < lengths.unsqueeze(1)  # [b, t]
        tokens = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        return TextFeatures.from_tensors(tokens=tokens, mask=mask, pooled=pooled)


def clip_text_pretrained_files(config: ClipTextConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``): the
    same open_clip file as the ``clip`` visual encoder's for this model and tag."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    return open_clip_files(config.model, config.pretrained, part="text tower")


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="text_encoder", name="clip_text", build=ClipTextEncoder, config=ClipTextConfig,
        requires=("open_clip", "torchvision"), install="pip install 'v2a[clip]'",
        properties=clip_text_properties, pretrained_files=clip_text_pretrained_files,
        description="CLIP text tower (open_clip; ViT-B-32): hidden state per token, pooled EOT",
    ))
