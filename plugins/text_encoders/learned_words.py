"""A weight-free word-level text encoder, trained with the model (plug-in ``learned_words``).

For the tiny model and tests, where a pre-trained text tower is far too big. A text is
normalised (Unicode NFKC, then case-folded) and split into *words*: runs of letters, digits and
combining marks; everything else separates words. Each word is looked up in a fixed
``vocabulary`` (normalised the same way): a word outside it is the one ``<unk>`` token, and a
text with no word at all (``""``, ``"?!"``, a line of emoji) is the single ``<empty>`` token.
Only the first ``max_tokens`` words count.

Token features are a learned embedding of the word plus a learned embedding of its position;
the pooled vector is the mean of the real tokens. Both tables are ordinary parameters, trained
with the rest of the model (nothing is frozen). ``weights``: ``"none"`` (random initialisation)
or a ``.safetensors`` file of this encoder's own ``state_dict()``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import trained_with_v2a
from v2a.schema import FieldError, bounded, check_bounds
from v2a.weights import NONE


def words_of(text: str) -> list[str]:
    """The words of ``text``: NFKC-normalised and case-folded, cut into runs of letters,
    digits and combining marks (Unicode categories L, N and M)."""
    words, current = [], []
    for char in unicodedata.normalize("NFKC", text).casefold():
        if unicodedata.category(char)[0] in "LNM":
            current.append(char)
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return words


@dataclass
class LearnedWordsConfig:
    """Options of the ``learned_words`` text encoder.

    ``vocabulary``: the known words, each one word as :func:`words_of` splits text (compared
    after the same normalisation, so ``"Dog"`` and ``"dog"`` are one word, given once); every
    other word is ``<unk>``. ``dim``: token and pooled width. ``max_tokens``: the words of a
    text that count (the rest is dropped). ``weights``: ``"none"`` or a ``.safetensors`` file
    of the encoder's ``state_dict()``.
    """

    vocabulary: list[str] = field(default_factory=list)
    """the known words, one word each (compared case-insensitively); others are <unk>"""
    dim: int = bounded(64, low=1)
    """token and pooled width"""
    max_tokens: int = bounded(32, low=1)
    """words of a text that count; the rest are dropped"""
    weights: str = NONE
    """none (random) or a .safetensors file of the encoder's state dict"""

    def __post_init__(self) -> None:
        check_bounds(self)
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.vocabulary):
            words = words_of(entry)
            if len(words) != 1:
                raise FieldError(f"vocabulary[{i}]", f"must be one word (letters and digits), "
                                                     f"got {entry!r}")
            if words[0] in seen:
                raise FieldError(f"vocabulary[{i}]", f"{entry!r} repeats vocabulary"
                                                     f"[{seen[words[0]]}]; give each word once")
            seen[words[0]] = i

    def normalised_vocabulary(self) -> list[str]:
        return [words_of(entry)[0] for entry in self.vocabulary]


def learned_words_properties(config: LearnedWordsConfig) -> dict:
    """The encoder's attributes, from its options alone (``ComponentSpec.properties``)."""
    return {"dim": config.dim, "pooled_dim": config.dim, "max_tokens": config.max_tokens}


def build_learned_words(config: LearnedWordsConfig):
    """The ``learned_words`` encoder of ``config`` (its module, and torch, imported on first use)."""
    from v2a_plugins.text_encoders.learned_words_model import LearnedWordsEncoder  # deferred: torch
    return LearnedWordsEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="text_encoder", name="learned_words", build=build_learned_words,
        config=LearnedWordsConfig, properties=learned_words_properties, state_dict_weights=True,
        pretrained_files=trained_with_v2a("the learned_words text encoder"),
        description="learned word + position embeddings over a fixed vocabulary (no weights)",
    ))


#: The implementation's names, importable from here; imported from their module on first use.
_HOMES = {"v2a_plugins.text_encoders.learned_words_model": (
    "EMPTY_ID", "FIRST_WORD_ID", "UNKNOWN_ID", "LearnedWordsEncoder",
)}
__all__ = ["LearnedWordsConfig", "build_learned_words", "learned_words_properties",
           "v2a_register_components", "words_of",
           *_HOMES["v2a_plugins.text_encoders.learned_words_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
