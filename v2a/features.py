"""The one way a recipe's video window becomes feature streams.

:func:`extraction_slots` says which of a recipe's components a feature cache holds the outputs
of. A visual encoder takes frames at its own :func:`frame_request` (frame rate and size);
:func:`window_frames` samples a window of a video (a file, or frames in memory) for such a
request, with frame times counted from the window's start; :func:`encode_frames` runs one
encoder over a batch of them (bytes or floats in [0, 1]). :func:`encode_video` puts the three
together for one window, :func:`encode_windows` for a batch of decoded windows (the feature
cache's batched form). Feature extraction (``v2a extract``), live training data, generation and
evaluation all go through here, so a stream means the same in all four.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from v2a.interfaces import VisualEncoder
from v2a.media import Video, load_video, resample_video
from v2a.recipe import ComponentChoice, Recipe
from v2a.sequences import FeatureSequence

#: What a visual encoder takes: ``(fps, (h, w))``, or ``(fps, None)`` for the displayed size.
FrameRequest = tuple[float, tuple[int, int] | None]

#: A window's frames for one :data:`FrameRequest`: ``frames [t, 3, h, w]`` (uint8 bytes or
#: float in [0, 1]) and ``times [t]`` float64 seconds from the window's start.
WindowFrames = tuple[Tensor, Tensor]


def extraction_slots(recipe: Recipe) -> dict[str, ComponentChoice]:
    """The recipe's components a cache holds the outputs of, by slot: ``codec``,
    ``visual_encoders.<stream>``, and ``audio_encoder`` (the reranker's own audio encoder when
    the recipe has no top-level one, as a reranking-only recipe)."""
    slots = {}
    if recipe.has("codec"):
        slots["codec"] = recipe.choice("codec")
    for stream in recipe.visual_streams:
        slots[f"visual_encoders.{stream}"] = recipe.choice(f"visual_encoders.{stream}")
    if recipe.has("audio_encoder"):
        slots["audio_encoder"] = recipe.choice("audio_encoder")
    elif recipe.has("reranker") and "audio_encoder" in recipe.choice("reranker").nested:
        slots["audio_encoder"] = recipe.choice("reranker").nested["audio_encoder"]
    return slots


def frame_request(encoder: VisualEncoder) -> FrameRequest:
    """The frames ``encoder`` takes: its ``fps`` and ``frame_size`` (None: the displayed size)."""
    size = tuple(int(s) for s in encoder.frame_size) if encoder.frame_size is not None else None
    return float(encoder.fps), size


def window_frames(video: str | Path | Video, request: FrameRequest, *, start: float,
                  duration: float, dtype: torch.dtype = torch.float32) -> WindowFrames:
    """The frames of ``duration`` s from ``start`` of ``video`` (a file, decoded with
    :func:`~v2a.media.load_video`, or frames in memory, resampled with
    :func:`~v2a.media.resample_video`) at ``request``'s rate and size, as ``dtype``
    (``torch.uint8``: the decoded bytes), with times counted from ``start``. Media problems are
    :class:`~v2a.media.MediaError`\\ s."""
    fps, size = request
    sample = resample_video if isinstance(video, Video) else load_video
    sampled = sample(video, fps=fps, size=size, start=start, duration=duration, dtype=dtype)
    return sampled.frames, sampled.times - start


def encode_frames(encoder: VisualEncoder, frames: Tensor, times: Tensor, *,
                  device: str | torch.device = "cpu") -> FeatureSequence:
    """``encoder`` over ``frames [b, t, 3, h, w]`` (uint8 bytes, or float in [0, 1]) at
    ``times [t]`` (seconds from the window's start, shared by the batch), on ``device``."""
    frames = frames.to(device)
    if frames.dtype == torch.uint8:
        frames = frames.float().div_(255.0)
    return encoder.encode(frames, times)


def encode_video(encoders: Mapping[str, VisualEncoder], video: str | Path | Video, duration: float,
                 *, start: float = 0.0, device: str | torch.device = "cpu",
                 ) -> dict[str, FeatureSequence]:
    """Each visual encoder's (stream name → encoder) feature sequence ``[1, t, d]`` of
    ``duration`` s from ``start`` of ``video`` (a file, or frames in memory as
    :func:`v2a.generate.video_source` gives them), with times counted from ``start``."""
    streams = {}
    for name, enc in encoders.items():
        frames, times = window_frames(video, frame_request(enc), start=start, duration=duration)
        streams[name] = encode_frames(enc, frames[None], times, device=device)
    return streams


def encode_windows(encoders: Mapping[str, VisualEncoder],
                   windows: Sequence[Mapping[FrameRequest, WindowFrames]], *,
                   device: str | torch.device = "cpu") -> list[dict[str, FeatureSequence]]:
    """:func:`encode_video` for a batch of windows already decoded (each window's frames by
    :data:`FrameRequest`, as :func:`window_frames` gives them): one forward pass per encoder
    for the whole batch, except that windows whose frames differ in shape or times are passed
    separately. Returns, per window, each stream as ``[1, t, d]`` float32 on the CPU, trimmed
    to its real steps (:func:`batch_rows`)."""
    streams: list[dict[str, FeatureSequence]] = [{} for _ in windows]
    for name, enc in encoders.items():
        request = frame_request(enc)
        keys = [(tuple(w[request][0].shape), tuple(w[request][1].tolist())) for w in windows]
        for group in _groups(keys):
            frames = torch.stack([windows[i][request][0] for i in group])
            seq = encode_frames(enc, frames, windows[group[0]][request][1], device=device)
            for i, row in zip(group, batch_rows(seq)):
                streams[i][name] = row
    return streams


def batch_rows(seq: FeatureSequence) -> list[FeatureSequence]:
    """Each row of a batched sequence ``[b, t, d]`` as ``[1, t, d]`` float32 on the CPU, trimmed
    to its real steps (by its padding mask, when it has one)."""
    rows = []
    for row in range(seq.values.shape[0]):
        values = seq.values[row : row + 1].float().cpu()
        if seq.mask is not None:
            values = values[:, : int(seq.mask[row].sum())]
        rows.append(FeatureSequence(values=values.contiguous(), rate=float(seq.rate),
                                    start=float(seq.start)))
    return rows


def _groups(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indices grouped by equal key, in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())
