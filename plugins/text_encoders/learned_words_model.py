"""The ``learned_words`` text encoder's network (:class:`LearnedWordsEncoder`; the plug-in,
its options and its documentation are :mod:`v2a_plugins.text_encoders.learned_words`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from v2a import TextEncoder, TextFeatures
from v2a.weights import load_trained
from v2a_plugins.text_encoders.learned_words import LearnedWordsConfig, words_of

#: The token id of a text without words, and of a word outside the vocabulary; the vocabulary's
#: words follow, in order.
EMPTY_ID, UNKNOWN_ID = 0, 1
FIRST_WORD_ID = 2


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
