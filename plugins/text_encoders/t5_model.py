"""The ``t5`` text encoder's implementation (:class:`T5TextEncoder` and the loading of its
``transformers`` parts; the plug-in, its options and its documentation are
:mod:`v2a_plugins.text_encoders.t5`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from v2a import TextEncoder, TextFeatures
from v2a.weights import PRETRAINED, WeightsError, is_random
from v2a_plugins.text_encoders.t5 import (
    INSTALL,
    RANDOM_PIECES,
    T5NotInstalledError,
    T5TextConfig,
)


def transformers_module() -> Any:
    """``transformers``, or a :class:`T5NotInstalledError` saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise T5NotInstalledError(
            f"the t5 text encoder needs the transformers package, which is not installed; "
            f"install it with: {INSTALL}") from None
    return transformers


def random_tokenizer(transformers: Any) -> Any:
    """A T5 tokenizer over :data:`RANDOM_PIECES`, built offline: each word is the word start
    then one piece per character (``<unk>`` for a character outside printable ASCII), and
    every text ends with ``</s>``, as with T5's own tokenizer."""
    pieces = [(piece, 0.0) for piece in RANDOM_PIECES[:3]]
    pieces += [(piece, -1.0) for piece in RANDOM_PIECES[3:]]
    return transformers.T5Tokenizer(vocab=pieces, extra_ids=0)


def random_model(config: T5TextConfig, transformers: Any) -> Any:
    """A randomly initialised ``T5EncoderModel`` of the size ``config`` gives."""
    return transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=config.vocab_size or len(RANDOM_PIECES), d_model=config.d_model,
        d_kv=config.d_model // config.heads, d_ff=config.d_ff, num_layers=config.layers,
        num_heads=config.heads, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        use_cache=False))


def _reason(exc: BaseException) -> str:
    """``Type: first line of the message`` of a loading failure."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def trained_parts(config: T5TextConfig, transformers: Any) -> tuple[Any, Any]:
    """(encoder, tokenizer) of a local folder or, for ``pretrained``, of ``checkpoint`` from
    the hub; a :class:`WeightsError` when they cannot be read."""
    pretrained = config.weights.strip().lower() == PRETRAINED
    source = config.checkpoint if pretrained else str(Path(config.weights).expanduser())
    if not pretrained and not Path(source).is_dir():
        raise WeightsError(
            f"the T5 weights {config.weights} are not a folder; give a folder saved with "
            f"save_pretrained (config.json, the weights and the tokenizer's files), or "
            f"'pretrained' to download {config.checkpoint}")
    try:
        model = transformers.T5EncoderModel.from_pretrained(source, local_files_only=not pretrained)
    except (OSError, ValueError) as exc:
        if pretrained:
            raise WeightsError(
                f"could not download the T5 checkpoint {source} from the Hugging Face hub "
                f"({_reason(exc)}); download it on a machine with internet and give the folder "
                "save_pretrained writes as the weights option") from None
        raise WeightsError(f"could not read {source} as a T5 checkpoint ({_reason(exc)}); give a "
                           "folder saved with save_pretrained that holds the model and its "
                           "tokenizer") from None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source,
                                                               local_files_only=not pretrained)
    except (OSError, ValueError, ImportError) as exc:
        hint = ("; a tokenizer that is only a SentencePiece spiece.model (no tokenizer.json) "
                "also needs: pip install sentencepiece"
                if importlib.util.find_spec("sentencepiece") is None else "")
        raise WeightsError(f"could not load the tokenizer of the T5 checkpoint {source} "
                           f"({_reason(exc)}){hint}") from None
    return model, tokenizer


class T5TextEncoder(TextEncoder):
    """T5's encoder stack behind the :class:`~v2a.interfaces.TextEncoder` contract: tokens
    ``[b, t, d_model]`` (``t``: the longest text of the batch in tokens, ``</s>`` included, at
    most ``max_tokens``; padding zero), pooled ``[b, d_model]`` = the mean of the real tokens.
    Its ``state_dict`` is the ``transformers`` model's, under ``model.``."""

    def __init__(self, config: T5TextConfig | None = None):
        super().__init__()
        config = config or T5TextConfig()
        self.config = config
        transformers = transformers_module()
        if is_random(config.weights):
            self.tokenizer = random_tokenizer(transformers)
            self.model = random_model(config, transformers)
        else:
            self.model, self.tokenizer = trained_parts(config, transformers)
        if len(self.tokenizer) > self.model.config.vocab_size:
            raise WeightsError(
                f"the T5 tokenizer has {len(self.tokenizer)} tokens but the model only "
                f"{self.model.config.vocab_size} token embeddings; give a tokenizer made for it")
        self.dim = self.pooled_dim = int(self.model.config.d_model)
        self.max_tokens = config.max_tokens
        self.trainable = config.trainable
        self.requires_grad_(self.trainable)
        self.train(False)

    def train(self, mode: bool = True) -> T5TextEncoder:
        """Follows ``mode`` when ``trainable``; a frozen encoder stays in eval mode."""
        return super().train(mode and self.trainable)

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids ``[b, t]`` and the attention mask ``[b, t]`` (1 = a real token), padded
        to the longest text and truncated at ``max_tokens``, on the CPU."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_tokens, return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"]

    def encode(self, texts: Sequence[str]) -> TextFeatures:
        """``b`` texts → last hidden states ``[b, t, d_model]`` and their masked mean."""
        ids, attention = self.tokenize(texts)
        device = self.model.get_input_embeddings().weight.device
        ids, attention = ids.to(device), attention.to(device)
        hidden = self.model(input_ids=ids, attention_mask=attention).last_hidden_state
        mask = attention.bool()
        tokens = hidden.masked_fill(~mask.unsqueeze(-1), 0.0)
        counts = mask.sum(dim=1, keepdim=True).to(tokens.dtype)  # >= 1: </s> is always there
        return TextFeatures.from_tensors(tokens=tokens, mask=mask, pooled=tokens.sum(1) / counts)
