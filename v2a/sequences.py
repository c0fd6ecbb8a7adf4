"""Feature sequences that carry their own rate, so nobody guesses rates again.

A :class:`FeatureSequence` is a batch of equally spaced feature vectors ``values: [b, t, d]`` with
the number of steps per second (``rate``), the time of the first step (``start``, seconds) and
an optional padding mask (``mask: [b, t]``, ``True`` = a real step). Step ``i`` describes the
time ``start + i / rate``. Every component that produces or consumes features over time speaks
in these objects: visual encoders, audio encoders, codec latents, fusers and rerankers.

:class:`Conditioning` is what a :class:`~v2a.interfaces.ConditionFuser` hands to a
:class:`~v2a.interfaces.MaskedGenerator`: a sequence aligned with the codec frames, a context
sequence for cross-attention, or both.

:class:`TextFeatures` is what a :class:`~v2a.interfaces.TextEncoder` returns: one feature
sequence step per token, and one pooled vector per text.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class FeatureSequence:
    """``values: [b, t, d]`` float; ``rate`` steps/s; ``start`` s; ``mask: [b, t]`` bool or None."""

    values: Tensor
    rate: float
    start: float = 0.0
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        if self.values.dim() != 3:
            raise ValueError(f"FeatureSequence values must be [b, t, d], got {tuple(self.values.shape)}")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"FeatureSequence rate must be a positive number, got {self.rate}")
        if self.mask is not None and tuple(self.mask.shape) != tuple(self.values.shape[:2]):
            raise ValueError(
                f"FeatureSequence mask must be [b, t] = {tuple(self.values.shape[:2])}, "
                f"got {tuple(self.mask.shape)}"
            )

    # -- sizes -----------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.values.shape[0]

    @property
    def length(self) -> int:
        return self.values.shape[1]

    @property
    def dim(self) -> int:
        return self.values.shape[2]

    @property
    def duration(self) -> float:
        """Seconds covered by the (padded) sequence."""
        return self.length / self.rate

    def times(self) -> Tensor:
        """``[t]`` float64 time in seconds of every step."""
        return self.start + torch.arange(self.length, dtype=torch.float64) / self.rate

    def valid_mask(self) -> Tensor:
        """``[b, t]`` bool, all ``True`` when the sequence has no padding."""
        if self.mask is not None:
            return self.mask
        return torch.ones(self.values.shape[:2], dtype=torch.bool, device=self.values.device)

    # -- tensor plumbing -------------------------------------------------------------------
    def replace(self, **changes) -> FeatureSequence:
        return dataclasses.replace(self, **changes)

    def to(self, *args, **kwargs) -> FeatureSequence:
        """Move values (and mask, device only) like :meth:`torch.Tensor.to`."""
        values = self.values.to(*args, **kwargs)
        mask = None if self.mask is None else self.mask.to(values.device)
        return self.replace(values=values, mask=mask)

    def index_select(self, index: Tensor) -> FeatureSequence:
        """Rows ``index`` of the batch (also repeats rows, e.g. for candidates)."""
        mask = None if self.mask is None else self.mask[index]
        return self.replace(values=self.values[index], mask=mask)

    def repeat_interleave(self, repeats: int) -> FeatureSequence:
        """Each batch row ``repeats`` times in a row: ``[b, t, d]`` → ``[b * repeats, t, d]``."""
        index = torch.arange(self.batch_size, device=self.values.device).repeat_interleave(repeats)
        return self.index_select(index)

    @staticmethod
    def cat(sequences: list[FeatureSequence]) -> FeatureSequence:
        """Concatenate along the batch; all must share rate, start and length."""
        first = sequences[0]
        for s in sequences[1:]:
            if s.rate != first.rate or s.length != first.length or s.start != first.start:
                raise ValueError("FeatureSequence.cat needs equal rate, start and length")
        masks = None
        if any(s.mask is not None for s in sequences):
            masks = torch.cat([s.valid_mask() for s in sequences])
        return first.replace(values=torch.cat([s.values for s in sequences]), mask=masks)

    # -- time -------------------------------------------------------------------------------
    def resample(self, rate: float, length: int, start: float = 0.0) -> FeatureSequence:
        """Linear interpolation onto ``length`` steps at ``rate`` starting at ``start``.

        Target times outside the source hold the nearest end value. Padded source steps are
        not interpolated from: each row is resampled over its own valid length, and target steps
        past the row's last valid time are marked as padding in the result's mask.
        """
        b, t, _ = self.values.shape
        device = self.values.device
        target = start + torch.arange(length, device=device, dtype=torch.float64) / rate
        pos = (target - self.start) * self.rate  # fractional source index, [length]
        lengths = self.valid_mask().sum(dim=1)  # [b]
        last = (lengths - 1).clamp(min=0).to(torch.float64)  # [b]
        pos = pos.unsqueeze(0).clamp(min=0).minimum(last.unsqueeze(1))  # [b, length]
        lo = pos.floor().long()
        hi = (lo + 1).minimum(last.long().unsqueeze(1))
        w = (pos - lo).to(self.values.dtype).unsqueeze(-1)
        gather = lambda idx: torch.gather(  # noqa: E731
            self.values, 1, idx.unsqueeze(-1).expand(-1, -1, self.values.shape[-1])
        )
        values = gather(lo) * (1 - w) + gather(hi) * w
        mask = None
        if self.mask is not None:
            end = self.start + lengths.to(torch.float64) / self.rate  # [b]
            mask = (target.unsqueeze(0) + 1e-9 < end.unsqueeze(1)) & (lengths > 0).unsqueeze(1)
        return FeatureSequence(values=values, rate=rate, start=start, mask=mask)


def first_frame_time(times: Tensor, num_frames: int) -> float:
    """The time of the first frame from ``times: [t]`` (or ``[b, t]`` rows that agree), checked
    against the number of frames: what a :class:`~v2a.interfaces.VisualEncoder` puts in ``start``."""
    times = torch.as_tensor(times)
    if times.shape[-1] != num_frames:
        raise ValueError(f"times has {times.shape[-1]} entries for {num_frames} frames")
    first = times.reshape(-1, num_frames)[:, 0].double()
    if (first - first[0]).abs().max() > 1e-6:
        raise ValueError("the rows of times start at different times; encode them separately")
    return float(first[0])


def pad_sequences(sequences: list[FeatureSequence]) -> FeatureSequence:
    """Batch single sequences of different lengths (same rate) into one padded sequence."""
    rate = sequences[0].rate
    if any(s.rate != rate for s in sequences):
        raise ValueError("pad_sequences needs sequences of one rate")
    length = max(s.length for s in sequences)
    values, masks = [], []
    for s in sequences:
        pad = length - s.length
        values.append(F.pad(s.values, (0, 0, 0, pad)))
        masks.append(F.pad(s.valid_mask(), (0, pad), value=False))
    return FeatureSequence(
        values=torch.cat(values), rate=rate, start=sequences[0].start, mask=torch.cat(masks)
    )


@dataclass
class Conditioning:
    """What a generator is conditioned on.

    ``aligned``: ``[b, l, d]`` at the codec frame rate, one vector per audio frame (AdaLN path).
    ``context``: ``[b, s, d]`` with its padding mask (cross-attention path). Its ``rate`` is
    nominal when the fuser concatenated streams of several rates: order, not time, matters to
    cross-attention. At least one is set.
    """

    aligned: FeatureSequence | None = None
    context: FeatureSequence | None = None

    def __post_init__(self) -> None:
        if self.aligned is None and self.context is None:
            raise ValueError("Conditioning needs an aligned sequence, a context sequence, or both")

    @property
    def batch_size(self) -> int:
        return (self.aligned or self.context).batch_size  # type: ignore[union-attr]

    def _map(self, fn) -> Conditioning:
        return Conditioning(
            aligned=None if self.aligned is None else fn(self.aligned),
            context=None if self.context is None else fn(self.context),
        )

    def to(self, *args, **kwargs) -> Conditioning:
        return self._map(lambda s: s.to(*args, **kwargs))

    def index_select(self, index: Tensor) -> Conditioning:
        return self._map(lambda s: s.index_select(index))

    def repeat_interleave(self, repeats: int) -> Conditioning:
        return self._map(lambda s: s.repeat_interleave(repeats))


#: The ``rate`` of a :class:`TextFeatures` token sequence: one step per token. Text has no time;
#: the rate only makes the tokens a :class:`FeatureSequence` like every other sequence.
TOKEN_RATE = 1.0


@dataclass(frozen=True)
class TextFeatures:
    """A batch of encoded texts.

    ``tokens``: ``[b, t, dim]`` at :data:`TOKEN_RATE` starting at 0, with its ``mask: [b, t]``
    (``True`` = a real token); every row has at least one real token. ``pooled``:
    ``[b, pooled_dim]``, one vector per text. Build one with :meth:`from_tensors`.
    """

    tokens: FeatureSequence
    pooled: Tensor

    def __post_init__(self) -> None:
        if self.tokens.mask is None:
            raise ValueError("TextFeatures tokens need a mask (True = a real token)")
        if self.pooled.dim() != 2 or self.pooled.shape[0] != self.tokens.batch_size:
            raise ValueError(
                f"TextFeatures pooled must be [b, pooled_dim] with b = {self.tokens.batch_size}, "
                f"got {tuple(self.pooled.shape)}"
            )

    @classmethod
    def from_tensors(cls, *, tokens: Tensor, mask: Tensor, pooled: Tensor) -> TextFeatures:
        """``tokens: [b, t, dim]``, ``mask: [b, t]`` bool, ``pooled: [b, pooled_dim]``."""
        return cls(tokens=FeatureSequence(values=tokens, rate=TOKEN_RATE, mask=mask), pooled=pooled)

    @property
    def batch_size(self) -> int:
        return self.tokens.batch_size
