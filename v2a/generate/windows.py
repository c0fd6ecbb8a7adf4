"""Generation windows: a long video's codes are sampled window by window, each continuing the
codes of its overlap with the one before (:func:`window_starts`, :func:`window_seed`), and
decoded window by window with context on either side, crossfaded where windows meet
(:func:`decode_in_windows`), so that memory does not grow with the video."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from v2a.interfaces import AudioCodec, fit_length

#: seconds a video may exceed the window (frame-rate rounding) and still be generated in one window
WINDOW_TOLERANCE = 0.05


def window_starts(total: int, width: int, *, overlap: int) -> list[int]:
    """First frames of the windows of ``width`` frames covering ``total`` frames, consecutive
    windows sharing at least ``overlap`` frames; the last window ends at ``total``."""
    if total <= width:
        return [0]
    hop = max(1, width - overlap)
    return list(range(0, total - width, hop)) + [total - width]


def window_seed(seed: int, window: int) -> int:
    """The sampling seed of window ``window`` (window 0 uses ``seed`` itself)."""
    if window == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % 2**63, int(window)]).generate_state(1)[0])


ALIGN = 8


def _align_up(frames: int) -> int:
    return -(-max(0, int(frames)) // ALIGN) * ALIGN


def _crossfade_weight(samples: int, ramp: int, *, fade_in: bool, fade_out: bool,
                      dtype: torch.dtype, device) -> Tensor:
    """``[samples]`` ones, rising as sin² over the first ``ramp`` samples when ``fade_in`` and
    falling as cos² over the last ``ramp`` when ``fade_out`` (complementary: they sum to one)."""
    weight = torch.ones(samples, dtype=dtype, device=device)
    if ramp and fade_in:  # fade in where the previous window fades out
        weight[:ramp] = torch.sin(torch.linspace(0, torch.pi / 2, ramp, device=device)) ** 2
    if ramp and fade_out:
        weight[-ramp:] = torch.cos(torch.linspace(0, torch.pi / 2, ramp, device=device)) ** 2
    return weight


def one_decode_call(total: int, *, window: int, context: int) -> bool:
    """Whether :func:`decode_in_windows` decodes ``total`` frames in one ``codec.decode`` call."""
    return total <= _align_up(window) + 2 * _align_up(context)


def decode_in_windows(codec: AudioCodec, codes: Tensor, length: int, *, window: int, context: int,
                      fade: int | None = None, progress: bool = False) -> Tensor:
    """``codec.decode(codes, length=length)`` for ``codes [b, k, L]``, one window of ``window``
    frames at a time, so that memory does not grow with the video.

    Each window is decoded with ``context`` frames of its neighbours on either side (a decoder's
    output near a frame depends on the frames around it), and neighbouring windows overlap by
    ``fade`` frames (default ``context // 2``), crossfaded with complementary sin²/cos² ramps (they
    sum to one, so where the two decodes agree the result is either of them). Codes no longer than
    one window plus its context are decoded at once."""
    total = codes.shape[-1]
    # windows start on multiples of ALIGN frames: a decoder whose output depends on the absolute
    # frame index modulo a small power of two (a phase initialisation from frame times, as the
    # spectral codec's Griffin-Lim) then decodes each window as it decodes the whole sequence
    window, context = _align_up(window), _align_up(context)
    fade = min(context, _align_up(context // 2) if fade is None else fade)
    if one_decode_call(total, window=window, context=context):
        return codec.decode(codes, length=length).float()  # AudioCodec fits the length

    samples = codec.num_samples
    out: Tensor | None = None
    firsts = list(range(0, total, window))
    for first in tqdm(firsts, desc="decoding", unit="window", leave=False, disable=not progress):
        last = min(total, first + window)
        lo, hi = max(0, first - fade // 2), min(total, last + fade - fade // 2)
        a, b = max(0, lo - context), min(total, hi + context)
        wav = codec.decode(codes[..., a:b]).float()  # frame a at sample 0
        begin, end = samples(lo), min(samples(hi), length)
        if end <= begin:
            break
        piece = fit_length(wav[..., samples(lo - a):], end - begin)
        if out is None:
            out = wav.new_zeros(*wav.shape[:-1], length)
        ramp = min(samples(fade), piece.shape[-1] // 2)
        weight = _crossfade_weight(piece.shape[-1], ramp, fade_in=first > 0, fade_out=last < total,
                                   dtype=piece.dtype, device=piece.device)
        out[..., begin:end] += piece * weight
    return out
