"""What the trainer reads: one clip's data, a clip that could not be used, and padded batches.

Datasets (:mod:`v2a.datasets`) give :class:`ClipItem`\\ s, or :class:`Skipped` for a clip they
cannot use; :func:`collate` pads a list of them into a :class:`Batch`, leaving the skipped ones
out of it and listing them in ``Batch.skipped``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from v2a.manifests import Clip
from v2a.sequences import FeatureSequence, pad_sequences


@dataclass
class ClipItem:
    """The training data of one clip (a window of ``data.clip_seconds`` from ``clip.start``).

    ``codes``: ``[k, l]`` int64 at ``frame_rate`` (None when the recipe has no codec);
    ``streams``: one :class:`~v2a.sequences.FeatureSequence` ``[1, t, d]`` per visual encoder,
    by stream name, times relative to the window's start; ``audio_features``: ``[1, t, d]`` of
    the recipe's audio encoder (None without one).
    """

    clip: Clip
    codes: Tensor | None
    streams: dict[str, FeatureSequence]
    audio_features: FeatureSequence | None
    frame_rate: float | None

    @property
    def id(self) -> str:
        return self.clip.id


@dataclass
class Skipped:
    """A clip that could not be used, and why (one sentence naming the file)."""

    clip: Clip
    reason: str


@dataclass
class Batch:
    """Clips padded to one length.

    ``codes``: ``[b, k, l]`` int64 (0 where padded) and ``valid``: ``[b, l]`` bool (True = a real
    frame), or None when the recipe has no codec; ``streams``: by name, ``[b, t, d]`` float32
    with a padding ``mask``; ``audio_features``: ``[b, t, d]`` with a mask, or None;
    ``frame_rate``: the codec's frames per second; ``skipped``: the items of the input that were
    :class:`Skipped` (not in the batch); ``captions``: a text per clip, in batch order (None
    for a clip without one), by default each clip's ``caption``. ``len(batch)`` is ``b``,
    which can be 0 when every item was skipped.
    """

    ids: list[str]
    clips: list[Clip]
    codes: Tensor | None
    valid: Tensor | None
    streams: dict[str, FeatureSequence]
    audio_features: FeatureSequence | None
    frame_rate: float | None
    skipped: list[Skipped] = field(default_factory=list)
    captions: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.captions:
            self.captions = [clip.caption for clip in self.clips]
        if len(self.captions) != len(self.clips):
            raise ValueError(f"a batch of {len(self.clips)} clips got {len(self.captions)} "
                             "captions")

    def __len__(self) -> int:
        return len(self.ids)

    def _map(self, tensor, sequence) -> Batch:
        return dataclasses.replace(
            self,
            codes=None if self.codes is None else tensor(self.codes),
            valid=None if self.valid is None else tensor(self.valid),
            streams={k: sequence(v) for k, v in self.streams.items()},
            audio_features=None if self.audio_features is None else sequence(self.audio_features),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return self._map(move, lambda s: s.replace(
            values=move(s.values), mask=None if s.mask is None else move(s.mask)))

    def pin_memory(self) -> Batch:
        """Called by a DataLoader with ``pin_memory=True``."""
        pin = lambda t: t.pin_memory()  # noqa: E731
        return self._map(pin, lambda s: s.replace(
            values=pin(s.values), mask=None if s.mask is None else pin(s.mask)))


def collate(items: Sequence[ClipItem | Skipped]) -> Batch:
    """Pad :class:`ClipItem`\\ s into a :class:`Batch`; :class:`Skipped` ones go to ``skipped``."""
    skipped = [i for i in items if isinstance(i, Skipped)]
    good = [i for i in items if not isinstance(i, Skipped)]
    if not good:
        return Batch(ids=[], clips=[], codes=None, valid=None, streams={}, audio_features=None,
                     frame_rate=None, skipped=skipped)
    codes = valid = None
    if good[0].codes is not None:
        k = good[0].codes.shape[0]
        length = max(i.codes.shape[1] for i in good)
        codes = torch.zeros(len(good), k, length, dtype=torch.long)
        valid = torch.zeros(len(good), length, dtype=torch.bool)
        for row, item in enumerate(good):
            codes[row, :, : item.codes.shape[1]] = item.codes
            valid[row, : item.codes.shape[1]] = True
    streams = {name: pad_sequences([_float(i.streams[name]) for i in good])
               for name in good[0].streams}
    audio = None
    if good[0].audio_features is not None:
        audio = pad_sequences([_float(i.audio_features) for i in good])
    return Batch(
        ids=[i.id for i in good], clips=[i.clip for i in good], codes=codes, valid=valid,
        streams=streams, audio_features=audio, frame_rate=good[0].frame_rate, skipped=skipped,
    )


def _float(seq: FeatureSequence) -> FeatureSequence:
    return seq if seq.values.dtype == torch.float32 else seq.replace(values=seq.values.float())

