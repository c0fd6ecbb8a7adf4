"""The one way a recipe's video window becomes feature streams.

:func:`extraction_slots` says which of a recipe's components a feature cache holds the outputs
of; :func:`encode_video` runs a recipe's visual encoders over a window of a video (a file, or
frames in memory), each at its own frame rate and size, with frame times counted from the
window's start. Feature extraction (``v2a extract``), live training data, generation and
evaluation all go through here, so a stream means the same in all four.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from v2a.interfaces import VisualEncoder
from v2a.media import Video, load_video, resample_video
from v2a.recipe import ComponentChoice, Recipe
from v2a.sequences import FeatureSequence


def extraction_slots(recipe: Recipe) -> dict[str, ComponentChoice]:
    """The recipe's components a cache holds the outputs of, by slot: ``codec``,
    ``visual_encoders.<stream>``, and ``audio_encoder`` (the reranker's own audio encoder when
    the recipe has no top-level one, as the SCAV recipe)."""
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


def encode_video(encoders: Mapping[str, VisualEncoder], video: str | Path | Video, duration: float,
                 *, start: float = 0.0, device: str | torch.device = "cpu",
                 ) -> dict[str, FeatureSequence]:
    """Each visual encoder's (stream name → encoder) feature sequence ``[1, t, d]`` of
    ``duration`` s from ``start`` of ``video`` (a file, or frames in memory as
    :func:`v2a.generate.video_source` gives them), with times counted from ``start``."""
    streams = {}
    for name, enc in encoders.items():
        size = tuple(int(s) for s in enc.frame_size) if enc.frame_size is not None else None
        sampled = (resample_video if isinstance(video, Video) else load_video)(
            video, fps=float(enc.fps), size=size, start=start, duration=duration)
        frames = sampled.frames.to(device)[None]  # [1, t, 3, h, w] in [0, 1]
        streams[name] = enc.encode(frames, sampled.times - start)
    return streams
