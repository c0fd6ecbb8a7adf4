"""What the rerankers that classify an audio-video offset share (Synchformer, SparseSync).

Such a reranker is a :class:`v2a.interfaces.SyncClassifier`: ``offset_logits(audio, video, *,
window)`` gives logits over its ``offsets`` for the window of ``window_seconds`` that starts
``window`` steps of ``step_seconds`` after the visual stream's first step. :class:`OffsetReranker`
adds, once for all of them: the check of the visual stream it reads, the offset in seconds of a
set of logits (``score`` option: the expected offset under the softmax, or the most likely one),
and ``score``: minus the mean absolute offset over the first and the last whole window.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from einops import rearrange
from torch import Tensor

from v2a import FeatureSequence, Reranker
from v2a.errors import UserError


class MissingStreamError(UserError):
    """The video features lack the stream an offset reranker reads, or it has another width."""


def window_starts(seconds: float, window_seconds: float, step_seconds: float) -> list[int]:
    """The first step of each window ``score`` reads in ``seconds`` of audio: ``[0]``, and the
    last whole window's when it starts at least one step later."""
    last = int((seconds - window_seconds) / step_seconds + 1e-6)
    return [0, last] if last > 0 else [0]


class OffsetReranker(Reranker):
    """The shared part of an offset-classifying reranker. A subclass sets ``name`` (its plug-in
    name, for messages), ``step_seconds``, ``width_rule`` and ``width_hint`` (how the stream's
    width follows from the options and what to set, for the message about a wrong width), and in
    ``__init__`` ``sample_rate``, ``offsets``, ``window_seconds``, ``video_streams`` and a
    ``config`` with ``video_stream`` and ``score``; and it implements ``offset_logits``."""

    name: str
    step_seconds: float
    width_rule: str
    width_hint: str
    window_seconds: float

    def video_sequence(self, video: Mapping[str, FeatureSequence]) -> FeatureSequence:
        """The stream it reads, checked for presence and width."""
        stream, dim = self.config.video_stream, self.video_streams[self.config.video_stream]
        if stream not in video:
            have = ", ".join(sorted(video)) or "none"
            raise MissingStreamError(
                f"the {self.name} reranker reads the visual stream {stream!r}, but the video has "
                f"{have}; add a {self.name} visual encoder under that name or set video_stream."
            )
        if video[stream].dim != dim:
            raise MissingStreamError(
                f"the visual stream {stream!r} is {video[stream].dim} wide, but the {self.name} "
                f"reranker expects {self.width_rule} = {dim}; {self.width_hint}."
            )
        return video[stream]

    def offset_logits(self, audio: Tensor, video: Mapping[str, FeatureSequence], *,
                      window: int = 0) -> Tensor:
        raise NotImplementedError

    def offset_seconds(self, logits: Tensor) -> Tensor:
        """``[..., len(offsets)]`` logits → the offset in seconds (``score`` option: expected or
        argmax)."""
        offsets = torch.tensor(self.offsets, dtype=logits.dtype, device=logits.device)
        if self.config.score == "argmax":
            return offsets[logits.argmax(dim=-1)]
        return logits.softmax(dim=-1) @ offsets

    def score(self, candidates: Tensor, video: Mapping[str, FeatureSequence]) -> Tensor:
        """``candidates: [b, n, c, s]`` → ``[b, n]``: minus the mean |offset| over the first and
        last windows."""
        b, n = candidates.shape[:2]
        audio = rearrange(candidates, "b n c s -> (b n) c s")
        stream = {self.config.video_stream: self.video_sequence(video).repeat_interleave(n)}
        windows = window_starts(audio.shape[-1] / self.sample_rate, self.window_seconds,
                                self.step_seconds)
        offsets = torch.stack([
            self.offset_seconds(self.offset_logits(audio, stream, window=w)).abs() for w in windows
        ]).mean(dim=0)
        return -rearrange(offsets, "(b n) -> b n", b=b)
