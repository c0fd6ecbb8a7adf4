"""The encoder half of T5 / Flan-T5 as a v2a :class:`~v2a.interfaces.TextEncoder` (plug-in ``t5``).

T5 (Raffel et al., 2020) is an encoder-decoder; text conditioning uses only its encoder stack
(``transformers``' ``T5EncoderModel``, the optional extra ``v2a[t5]``), kept frozen. Audio
generation models read it that way: Tango and AudioLDM 2 condition on a frozen
``google/flan-t5-large`` encoder, Stable Audio Open and AudioGen on ``t5-base``. The default
checkpoint here is ``google/flan-t5-large``, the one Tango and AudioLDM 2 use.

* **Tokens**: the encoder's last hidden states (after its final layer norm), ``[b, t, d_model]``
  at one step per token; the tokenizer's attention mask says which are real. T5's tokenizer ends
  every text with its end-of-sequence token ``</s>``, which counts as a real token, so the empty
  prompt ``""`` is the one token ``</s>``. Padding (to the longest text of the batch) is masked
  in the encoder's attention and zero in the output: T5's encoder is bidirectional, and a text's
  states do not depend on how far its row is padded.
* **Pooled**: T5 has no pooled output, so ``pooled`` is the mean of a text's real tokens
  (``</s>`` included), ``[b, d_model]``.
* **Truncation**: at most ``max_tokens`` tokens per text: a longer text keeps its first
  ``max_tokens - 1`` tokens and ends with ``</s>``. T5 has relative positions and no length
  limit of its own; the default 128 is Stable Audio Open's prompt length, plenty for captions.
* **Weights** (``weights``): ``pretrained``: ``transformers`` downloads ``checkpoint`` from the
  Hugging Face hub (its own cache); a local folder in the layout ``save_pretrained`` writes (the
  model's ``config.json`` and weights and the tokenizer's files, of a ``T5EncoderModel`` or a
  whole T5), read offline, whose ``config.json`` sets the architecture; ``none``: random
  initialisation of the size ``d_model``, ``layers``, ``heads``, ``d_ff`` and ``vocab_size``
  give (read only then), with a character-level tokenizer built offline (:func:`random_tokenizer`).
  The Flan-T5 checkpoints ship a ``tokenizer.json``, which needs nothing beyond
  ``transformers``; a checkpoint that ships only a SentencePiece ``spiece.model`` also needs the
  ``sentencepiece`` package.
* **Frozen** unless ``trainable``: no parameter requires grad and the encoder stays in eval mode
  (its dropout off) whatever mode the model around it is put in. With ``trainable: true`` its
  parameters train with the model and it follows the model's train/eval mode.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

from v2a import ComponentSpec, hookimpl
from v2a.errors import UserError
from v2a.lazy import lazy_exports
from v2a.pretrained import PretrainedFile, hub_model_folder
from v2a.schema import FieldError, bounded, check_bounds
from v2a.weights import PRETRAINED, is_random

DEFAULT_CHECKPOINT = "google/flan-t5-large"
INSTALL = "pip install 'v2a[t5]'"
#: The special tokens of a T5 vocabulary, at T5's ids: padding 0, end of sequence 1, unknown 2.
PAD, EOS, UNKNOWN = "<pad>", "</s>", "<unk>"
#: SentencePiece's word-start marker, which T5's tokenizer puts before every word.
WORD_START = "\u2581"
#: The pieces of the ``weights: none`` tokenizer: the special tokens, the word start, then one
#: piece per printable ASCII character; every other character is ``<unk>``.
RANDOM_PIECES = (PAD, EOS, UNKNOWN, WORD_START,
                 *(c for c in string.printable if not c.isspace()))

#: ``d_model`` of the T5 checkpoints most used for text conditioning, so that a recipe learns
#: the token width without downloading anything. Another checkpoint's width is known only once
#: it is built (or, for a local folder, from its ``config.json``).
MODEL_WIDTHS: dict[str, int] = {
    **{f"google/flan-t5-{size}": width for size, width in
       (("small", 512), ("base", 768), ("large", 1024), ("xl", 2048), ("xxl", 4096))},
    **{f"google/t5-v1_1-{size}": width for size, width in
       (("small", 512), ("base", 768), ("large", 1024), ("xl", 2048), ("xxl", 4096))},
    **{name: width for size, width in
       (("small", 512), ("base", 768), ("large", 1024), ("3b", 1024), ("11b", 1024))
       for name in (f"t5-{size}", f"google-t5/t5-{size}")},
}


class T5NotInstalledError(UserError):
    """The ``t5`` plug-in is asked for without ``transformers``."""


@dataclass
class T5TextConfig:
    """Options of the ``t5`` text encoder.

    ``weights``: ``"pretrained"`` (``checkpoint`` from the Hugging Face hub), a local folder
    saved with ``save_pretrained``, or ``"none"`` (random init of the size below).
    ``checkpoint``: the hub name ``pretrained`` downloads. ``max_tokens``: the most tokens of one
    text, ``</s>`` included (a longer text is truncated). ``trainable``: train the encoder with
    the model instead of keeping it frozen. The size of a random init (read only with
    ``weights: none``): ``d_model`` (token width), ``layers``, ``heads`` (must divide
    ``d_model``), ``d_ff`` (the gated-GELU feed-forward width, as in T5 v1.1 and Flan-T5) and
    ``vocab_size`` (embedding rows; ``None``: exactly the offline tokenizer's pieces).
    """

    weights: str = PRETRAINED
    """pretrained (checkpoint from the Hugging Face hub), a folder saved with save_pretrained, or
    none (random, of the size below)"""
    checkpoint: str = DEFAULT_CHECKPOINT
    """the Hugging Face hub name that weights: pretrained downloads"""
    max_tokens: int = bounded(128, low=2)
    """most tokens of one text, </s> included; longer texts are truncated"""
    trainable: bool = False
    """train the encoder with the model instead of keeping it frozen"""
    d_model: int = bounded(64, low=1)
    """random init: token width"""
    layers: int = bounded(2, low=1)
    """random init: encoder layers"""
    heads: int = bounded(4, low=1)
    """random init: attention heads (must divide d_model)"""
    d_ff: int = bounded(128, low=1)
    """random init: gated-GELU feed-forward width"""
    vocab_size: int | None = None
    """random init: embedding rows; null: exactly the offline tokenizer's pieces"""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.d_model % self.heads:
            raise FieldError("heads", f"must divide d_model {self.d_model}, got {self.heads}")
        if self.vocab_size is not None and self.vocab_size < len(RANDOM_PIECES):
            raise FieldError("vocab_size", f"must be at least {len(RANDOM_PIECES)} (the pieces of "
                                           f"the offline tokenizer), got {self.vocab_size}")


def t5_text_properties(config: T5TextConfig) -> dict:
    """The encoder's attributes known without building it: ``max_tokens``, and the width
    (``dim`` = ``pooled_dim``) of a random init, of a checkpoint in :data:`MODEL_WIDTHS`, or
    of a local folder whose ``config.json`` gives ``d_model``."""
    known: dict = {"max_tokens": config.max_tokens}
    width = None
    if is_random(config.weights):
        width = config.d_model
    elif config.weights.strip().lower() == PRETRAINED:
        width = MODEL_WIDTHS.get(config.checkpoint)
    else:
        try:
            width = json.loads((Path(config.weights).expanduser() / "config.json").read_text(
                encoding="utf-8")).get("d_model")
        except (OSError, ValueError, AttributeError):
            width = None  # the build says what is wrong with the folder
    if isinstance(width, int) and width > 0:
        known.update(dim=width, pooled_dim=width)
    return known


def t5_pretrained_files(config: T5TextConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``): the
    ``checkpoint`` repository, as ``transformers``' ``from_pretrained`` fetches it into the Hub
    cache (the encoder's config and weights, the tokenizer's files)."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    licence = ("Apache-2.0 (its model card)" if config.checkpoint == DEFAULT_CHECKPOINT
               else "unknown here (see the checkpoint's model card)")
    return [hub_model_folder(what=f"T5 checkpoint {config.checkpoint}",
                             repo_id=config.checkpoint,
                             load=lambda: load_checkpoint(config),
                             licence=licence)]


def load_checkpoint(config: T5TextConfig):
    """(encoder, tokenizer) of ``config``'s trained weights (``transformers`` imported now)."""
    from v2a_plugins.text_encoders import t5_model  # deferred: torch (and transformers)
    return t5_model.trained_parts(config, t5_model.transformers_module())


def build_t5(config: T5TextConfig):
    """The ``t5`` encoder of ``config`` (its module, torch and ``transformers`` imported on
    first use)."""
    from v2a_plugins.text_encoders.t5_model import T5TextEncoder  # deferred: torch
    return T5TextEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="text_encoder", name="t5", build=build_t5, config=T5TextConfig,
        properties=t5_text_properties, requires=("transformers",), install=INSTALL,
        pretrained_files=t5_pretrained_files,
        description="T5 / Flan-T5 encoder (transformers; google/flan-t5-large): frozen hidden "
                    "state per token, pooled mean; needs v2a[t5]",
    ))


#: The implementation's names, importable from here; imported from their module on first use.
_HOMES = {"v2a_plugins.text_encoders.t5_model": (
    "T5TextEncoder", "random_model", "random_tokenizer", "trained_parts", "transformers_module",
)}
__all__ = ["DEFAULT_CHECKPOINT", "EOS", "INSTALL", "MODEL_WIDTHS", "PAD", "RANDOM_PIECES",
           "UNKNOWN", "WORD_START", "T5NotInstalledError", "T5TextConfig", "build_t5",
           "load_checkpoint", "t5_pretrained_files", "t5_text_properties",
           "v2a_register_components", *_HOMES["v2a_plugins.text_encoders.t5_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
