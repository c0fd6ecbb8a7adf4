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
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from v2a import ComponentSpec, TextEncoder, TextFeatures, hookimpl
from v2a.pretrained import trained_with_v2a
from v2a.schema import FieldError, bounded, check_bounds
from v2a.weights import NONE, load_trained

#: The token id of a text without words, and of a word outside the vocabulary; the vocabulary's
#: words follow, in order.
EMPTY_ID, UNKNOWN_ID = 0, 1
FIRST_WORD_ID = 2


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


class LearnedWordsEncoder(TextEncoder):
    """Learned word and position embeddings behind the :class:`~v2a.interfaces.TextEncoder`
    contract: tokens ``[b, t, dim]`` (``t``: the most words of a text in the batch, at least
    one), pooled ``[b, dim]`` = the mean of each text's real tokens."""

    def __init__(self, config: LearnedWordsConfig):
        super().__init__()
        self.config = config
        self.word_ids = {word: FIRST_WORD_ID + i
                         for i, word in enumerate(config.normalised_vocabulary())}
        self.dim = self.pooled_dim = config.dim
        self.max_tokens = config.max_tokens
        self.word_embedding = nn.Embedding(FIRST_WORD_ID + len(self.word_ids), config.dim)
        self.position_embedding = nn.Embedding(config.max_tokens, config.dim)
        load_trained(self, config.weights, what="the learned_words text encoder")

    def token_ids(self, text: str) -> list[int]:
        """The token ids of one text: its first ``max_tokens`` words, or ``[EMPTY_ID]``."""
        words = words_of(text)[: self.max_tokens]
        return [self.word_ids.get(word, UNKNOWN_ID) for word in words] or [EMPTY_ID]

    def encode(self, texts: Sequence[str]) -> TextFeatures:
        """``b`` texts → tokens ``[b, t, dim]`` (padding zero) and pooled ``[b, dim]``."""
        rows = [self.token_ids(text) for text in texts]
        length = max((len(row) for row in rows), default=1)
        ids = torch.full((len(rows), length), EMPTY_ID, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
        mask = torch.arange(length) < lengths.unsqueeze(1)  # [b, t]
        device = self.word_embedding.weight.device
        ids, mask = ids.to(device), mask.to(device)
        tokens = self.word_embedding(ids) + self.position_embedding.weight[:length]
        tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
        pooled = tokens.sum(dim=1) / lengths.to(device=device, dtype=tokens.dtype).unsqueeze(1)
        return TextFeatures.from_tensors(tokens=tokens, mask=mask, pooled=pooled)


def learned_words_properties(config: LearnedWordsConfig) -> dict:
    """The encoder's attributes, from its options alone (``ComponentSpec.properties``)."""
    return {"dim": config.dim, "pooled_dim": config.dim, "max_tokens": config.max_tokens}


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="text_encoder", name="learned_words", build=LearnedWordsEncoder,
        config=LearnedWordsConfig, properties=learned_words_properties, state_dict_weights=True,
        pretrained_files=trained_with_v2a("the learned_words text encoder"),
        description="learned word + position embeddings over a fixed vocabulary (no weights)",
    ))
