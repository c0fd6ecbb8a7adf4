"""The checks of :class:`~v2a.interfaces.TextEncoder`, and how the common checks run one
(:data:`PROBE`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from v2a.sequences import TOKEN_RATE, TextFeatures
from v2a.testing.checks.support import (
    CLOSE,
    Check,
    ConformanceError,
    Factory,
    Probe,
    all_finite,
    build,
    call,
    check_features,
    component_name,
    difference,
    shape_of,
)

#: Prompts the checks encode, cycled over the rows of a batch: ordinary ones of different
#: lengths, the empty prompt and punctuation.
PROMPTS = (
    "a dog barks twice",
    "rain on a tin roof while thunder rolls far away",
    "",
    "Footsteps on gravel, then a door slams!",
)

#: Texts no encoder may raise on: accents (composed, and as combining marks), CJK, emoji
#: (with skin tones and joiners), right-to-left and Greek scripts, invisible characters,
#: whitespace of every kind, and text with no letters at all.
UNICODE_TEXTS = (
    "café crème brûlée",
    "cafe\u0301 cre\u0300me, q\u0301 and n\u0303",
    "狗在雨中叫，猫在睡觉",
    "犬が吠える 개가 짖는다",
    "🎉🔥 fireworks 🎆👍🏽",
    "👩\u200d👩\u200d👧 a family laughs",
    "مرحبا بالعالم",
    "Ελληνικά κείμενα",
    "\u200b\u200c\ufeff zero width",
    "tab\tand\nnewline\r\n  spaces",
    "?!… — «»",
)

#: The short text of the padding check, and the much longer one it shares a batch with.
SHORT_TEXT = "a dog barks"
LONG_TEXT = " ".join(["footsteps on gravel and then a heavy wooden door slams shut"] * 4)


def as_text_features(obj: Any, what: str) -> TextFeatures:
    if not isinstance(obj, TextFeatures):
        raise ConformanceError(f"{what} returned a {type(obj).__name__}, not a TextFeatures")
    return obj


def _encode(encoder, texts: Sequence[str], when: str = "") -> TextFeatures:
    """``encoder.encode(texts)``, checked to be a well-formed :class:`TextFeatures` for that
    many texts: float tokens ``[b, t, dim]`` at rate 1 from 0 with ``1 <= t <= max_tokens``, a
    bool mask with a real token in every row, float ``pooled [b, pooled_dim]``, all finite."""
    name = component_name(encoder)
    what = f"{name}.encode"
    out = as_text_features(call(what + when, encoder.encode, list(texts)), what)
    b = len(texts)
    check_features(what, out.tokens, interface="TextEncoder", batch=b, dim=encoder.dim,
                   rate=TOKEN_RATE)
    tokens, mask = out.tokens.values, out.tokens.mask
    if out.tokens.start != 0:
        raise ConformanceError(f"{what} returned tokens starting at {out.tokens.start}; the "
                               "TextEncoder contract is start 0")
    if not 1 <= tokens.shape[1] <= encoder.max_tokens:
        raise ConformanceError(f"{what} returned {tokens.shape[1]} token steps; the TextEncoder "
                               f"contract is between 1 and max_tokens ({encoder.max_tokens})")
    if mask.dtype != torch.bool:
        raise ConformanceError(f"{what} returned a {mask.dtype} token mask; the TextEncoder "
                               "contract is bool, True = a real token")
    empty = [i for i in range(b) if not bool(mask[i].any())]
    if empty:
        raise ConformanceError(
            f"{what} returned no real token for {texts[empty[0]]!r}; every row needs at least "
            "one (the empty prompt included), or cross-attention over it is undefined"
        )
    pooled = out.pooled
    if not pooled.is_floating_point() or shape_of(pooled) != [b, encoder.pooled_dim]:
        raise ConformanceError(
            f"{what} returned {pooled.dtype} pooled vectors of shape {shape_of(pooled)}; the "
            f"TextEncoder contract is float [b, pooled_dim] = [{b}, {encoder.pooled_dim}]"
        )
    if not (all_finite(tokens, mask) and all_finite(pooled)):
        raise ConformanceError(f"{what} returned non-finite token features or pooled vectors")
    return out


def _row(out: TextFeatures, i: int) -> dict[str, Tensor]:
    """Row ``i`` of ``out`` as comparable outputs: its real tokens ``[n, dim]`` and its pooled
    vector ``[1, pooled_dim]`` (padding dropped, so rows padded differently compare)."""
    real = out.tokens.mask[i]
    return {"tokens": out.tokens.values[i][real], "pooled": out.pooled[i : i + 1]}


#: The texts of the common checks: the prompts with words (the empty one has its own check).
PROBE_TEXTS = tuple(text for text in PROMPTS if text)


def _text_example(encoder, batch, gen):
    return {"texts": [PROBE_TEXTS[i % len(PROBE_TEXTS)] for i in range(batch)]}


def _text_run(encoder, ex, when=""):
    what = f"{component_name(encoder)}.encode"
    out = as_text_features(call(what + when, encoder.encode, ex["texts"]), what)
    # padded to one length, so that any two runs compare (their padding is not compared)
    pad = max(encoder.max_tokens, out.tokens.length) - out.tokens.length
    return {"tokens": F.pad(out.tokens.values, (0, 0, 0, pad)),
            "tokens.mask": F.pad(out.tokens.mask, (0, pad), value=False),
            "pooled": out.pooled}


#: How the common checks run a text encoder (``texts``, a list, is split by rows like a tensor).
PROBE = Probe(_text_example, _text_run)


def check_text_encoder_output(factory: Factory) -> None:
    """Four prompts (the empty one among them) give a :class:`~v2a.sequences.TextFeatures`:
    float tokens ``[4, t, dim]`` at rate 1.0 from 0 with ``1 <= t <= max_tokens``, a bool mask
    with at least one real token per row, float ``pooled [4, pooled_dim]``, all finite."""
    _encode(build(factory), PROMPTS)


def check_text_encoder_padding(factory: Factory) -> None:
    """A short text gives the same real tokens and pooled vector alone as in a batch with a
    much longer text (first or second), whose padding makes its row longer: results depend
    neither on the other texts nor on padding (within :data:`CLOSE`, see the comment)."""
    encoder = build(factory)
    name = component_name(encoder)
    alone = _row(_encode(encoder, [SHORT_TEXT]), 0)
    for texts, row in (([SHORT_TEXT, LONG_TEXT], 0), ([LONG_TEXT, SHORT_TEXT], 1)):
        # The same arithmetic on the same row; only the shapes of the batched matrix products
        # differ, and with them the kernels' blocking and so the float32 accumulation order.
        # A reordered float32 sum of K terms differs by about sqrt(K) * 2^-24 of its magnitude
        # (K <= a few thousand: ~1e-5), a little more after a few layers; CLOSE (1e-4 of the
        # largest value) holds that on any x86 CPU: float32 products never drop to bfloat16.
        diff = difference(alone, _row(_encode(encoder, texts), row), tol=CLOSE)
        if diff:
            raise ConformanceError(
                f"{name}.encode gives {SHORT_TEXT!r} different results in a batch with a longer "
                f"text (row {row}) than alone ({diff}); the other texts and the padding must "
                "not change a text's tokens or pooled vector"
            )


def check_text_encoder_empty(factory: Factory) -> None:
    """The empty prompt ``""`` gives at least one real token and finite values, alone and in a
    batch, and the same results both ways (within :data:`CLOSE`, as the padding check)."""
    encoder = build(factory)
    alone = _row(_encode(encoder, [""]), 0)
    diff = difference(alone, _row(_encode(encoder, ["", SHORT_TEXT]), 0), tol=CLOSE)
    if diff:
        raise ConformanceError(
            f"{component_name(encoder)}.encode gives the empty prompt different results in a "
            f"batch than alone ({diff})"
        )


def check_text_encoder_unicode(factory: Factory) -> None:
    """Texts in any script, with combining marks, emoji, joiners and invisible characters, or
    with no letters at all, encode without raising, each with a real token and finite values."""
    _encode(build(factory), UNICODE_TEXTS)


def check_text_encoder_truncation(factory: Factory) -> None:
    """A text of ``2 * max_tokens + 8`` words is truncated, not refused: it gives exactly
    ``max_tokens`` real tokens, beside a short text that keeps its own, shorter, result."""
    encoder = build(factory)
    name = component_name(encoder)
    words = " ".join(f"word{i}" for i in range(2 * encoder.max_tokens + 8))
    out = _encode(encoder, [words, SHORT_TEXT])
    real = int(out.tokens.mask[0].sum())
    if real != encoder.max_tokens:
        raise ConformanceError(
            f"{name}.encode gave a text of {2 * encoder.max_tokens + 8} words {real} real "
            f"tokens; a text longer than max_tokens ({encoder.max_tokens}) is truncated to "
            "exactly that many"
        )
    diff = difference(_row(_encode(encoder, [SHORT_TEXT]), 0), _row(out, 1), tol=CLOSE)
    if diff:
        raise ConformanceError(
            f"{name}.encode gives {SHORT_TEXT!r} different results beside a truncated text than "
            f"alone ({diff})"
        )


#: The checks of this kind, in the order they run (after the common checks).
KIND_CHECKS: list[Check] = [
    check_text_encoder_output,
    check_text_encoder_padding,
    check_text_encoder_empty,
    check_text_encoder_unicode,
    check_text_encoder_truncation,
]
