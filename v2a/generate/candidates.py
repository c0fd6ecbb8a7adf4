"""Decoding a window's candidates for the reranker (:class:`CandidateDecoder`).

``B`` candidates are ``B`` rows of codes; the codec can decode them one call per row or several
rows per call. Which is faster depends on the machine: on a GPU a batch fills the device; on a
CPU a 44.1 kHz DAC decode of 4 rows × 2 s in one call took 1.4× as long as four one-row calls
(an Intel Xeon with AMX, 2 threads; docs/performance.md). So the batch size is measured, not
assumed: the first window decodes one row (not timed: a first call pays one-time costs, such
as kernels built for the shape), one row again, then two, then four, ..., keeping a larger batch
only while it decodes a row at least :data:`BATCH_GAIN` times as fast; the size it settles on is
kept for later windows of the same length. Every call decodes candidates that are needed, so
the measurement costs no extra decoding. A batch never makes more than
:data:`DECODE_CALL_SAMPLES` output samples (channels × samples, all rows): the decoder's
activations grow with what one call decodes, so this bounds the memory.

Batching changes only the floating-point blocking of the decoder's convolutions and FFTs, so a
row decodes to the same samples within float32 rounding (tests/test_candidate_decoding.py
derives the tolerance). :meth:`CandidateDecoder.decode` also says which rows were decoded in a
call of their own: such a row's waveform is exactly what decoding its codes alone gives, so
``v2a generate`` keeps the chosen candidate's waveform as its output instead of decoding its codes
a second time when it was decoded alone, and decodes them again otherwise (so the written audio
never depends on the batch size measured).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from v2a.interfaces import AudioCodec

#: The most output samples (channels × samples, summed over rows) one decode call may produce.
#: A 44.1 kHz DAC decoder holds a few hundred floats of activations per output sample, so 2²⁰
#: samples (24 s of 44.1 kHz mono) keep one call under about 1.5 GB.
DECODE_CALL_SAMPLES = 1 << 20
#: A doubled batch is kept when its time per row is below this share of the best so far.
BATCH_GAIN = 0.9


class CandidateDecoder:
    """``decoder(codes [b, k, l]) → wav [b, c, n]`` float32: ``codec.decode`` of every row, in
    calls of a batch size chosen by measurement (see the module docstring) and bounded by
    ``max_samples`` output samples per call. ``clock``: seconds, read after the device finished
    (a CUDA device is synchronised before each reading)."""

    def __init__(self, *, codec: AudioCodec, max_samples: int = DECODE_CALL_SAMPLES,
                 clock: Callable[[], float] = time.perf_counter):
        self.codec = codec
        self.max_samples = int(max_samples)
        self.clock = clock
        self.settled: dict[tuple[int, str], int] = {}  # (code frames, device) → rows per call

    def max_rows(self, frames: int) -> int:
        """The most rows of ``frames`` code frames one call may decode (at least one)."""
        per_row = self.codec.num_samples(frames) * int(self.codec.channels)
        return max(1, self.max_samples // max(1, per_row))

    def _now(self, device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return self.clock()

    def __call__(self, codes: Tensor) -> Tensor:
        return self.decode(codes)[0]

    def decode(self, codes: Tensor) -> tuple[Tensor, list[bool]]:
        """``(wav [b, c, n] float32, alone)``: every row decoded, and for each row whether it was
        decoded in a call of its own (then its samples are exactly ``codec.decode`` of that
        row alone)."""
        total, frames = codes.shape[0], codes.shape[-1]
        key = (frames, str(codes.device))
        limit = self.max_rows(frames)
        trying = key not in self.settled
        rows = 1 if trying else min(self.settled[key], limit)
        kept, best = rows, math.inf  # the fastest batch size measured so far, and its s/row
        pieces, alone, done = [], [], 0
        if trying and total > 1:  # a first call, not timed: one-time costs would bias it
            pieces.append(self.codec.decode(codes[:1]).float())
            alone.append(True)
            done = 1
        while done < total:
            batch = min(rows, total - done)
            start = self._now(codes.device)
            pieces.append(self.codec.decode(codes[done:done + batch]).float())
            per_row = (self._now(codes.device) - start) / batch
            alone += [batch == 1] * batch
            done += batch
            if not trying or batch < rows:
                continue  # settled, or a short last batch: not a measurement of `rows`
            if per_row < BATCH_GAIN * best:
                kept, best = rows, per_row
            if kept == rows and rows < limit:
                rows = min(2 * rows, limit)  # this size was the fastest: try twice as many
            else:
                rows, trying = kept, False
                self.settled[key] = kept
        if trying:  # the candidates ran out before the sizes did: keep the fastest measured
            self.settled[key] = kept
        return torch.cat(pieces), alone
