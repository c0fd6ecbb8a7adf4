"""The ``clip_text`` text encoder's implementation: building open_clip's CLIP text tower and
:class:`ClipTextEncoder` (the plug-in, its options and its documentation are
:mod:`v2a_plugins.text_encoders.clip_text`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from v2a import TextEncoder, TextFeatures
from v2a.errors import UserError, suggestion
from v2a.weights import (
    PRETRAINED,
    WeightsError,
    is_random,
    load_checkpoint,
    load_into,
    local_file,
)
from v2a_plugins.text_encoders.clip_text import ClipTextConfig
from v2a_plugins.visual_encoders.clip_model import _quiet_random_init, pretrained_model, shared_model_kwargs

#: A minimal vision tower for models whose vision tower is discarded at once (open_clip builds
#: both towers).
_UNUSED_VISION_TOWER = dict(image_size=16, patch_size=16, width=8, layers=1, head_width=8)
#: The text parts of an open_clip CLIP model this encoder keeps, under the names (and so the
#: state-dict keys) open_clip gives them.
_PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


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
    text = config.text_overrides()
    if config.heads is not None and config.width is None and named["text_cfg"]["width"] % config.heads:
        raise UserError(f"heads ({config.heads}) must divide the text width of {config.model} "
                        f"({named['text_cfg']['width']}); give a width too")
    kwargs = shared_model_kwargs(config, tag)
    if text:
        kwargs["text_cfg"] = {**named["text_cfg"], **text}
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
