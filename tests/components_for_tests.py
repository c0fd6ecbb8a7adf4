"""Small honest components registered only in the tests' registry (see conftest.py).

They exist so that recipe tests have a visual encoder with options of several types; they are
registered with ``Registry.register_module`` like any plug-in object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

from v2a import ComponentSpec, FeatureSequence, Reranker, VisualEncoder, hookimpl
from v2a.registry import component_option, default_registry


@dataclass
class MeanColourConfig:
    fps: float = 8.0
    size: list[int] = field(default_factory=lambda: [32, 32])
    space: Literal["rgb", "grey"] = "rgb"
    scale: float | None = None

    def __post_init__(self):
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")


class MeanColour(VisualEncoder):
    """One feature per frame: the frame's mean colour (3 values, or 1 for ``grey``)."""

    def __init__(self, config: MeanColourConfig):
        super().__init__()
        self.fps = config.fps
        self.rate = config.fps
        self.frame_size = (config.size[0], config.size[1])
        self.grey = config.space == "grey"
        self.dim = 1 if self.grey else 3
        self.scale = 1.0 if config.scale is None else config.scale

    def encode(self, frames: Tensor, times: Tensor) -> FeatureSequence:
        colour = frames.mean(dim=(-1, -2)) * self.scale  # [b, t, 3]
        if self.grey:
            colour = colour.mean(dim=-1, keepdim=True)
        start = float(times.reshape(-1, times.shape[-1])[0, 0]) if times.numel() else 0.0
        return FeatureSequence(values=colour, rate=self.rate, start=start)


@dataclass
class LoudestConfig:
    audio_encoder: dict = component_option("audio_encoder", "mel", n_mels=8)


class Loudest(Reranker):
    """Scores each candidate by the mean of its audio features (any audio encoder)."""

    def __init__(self, config: LoudestConfig):
        super().__init__()
        self.audio_encoder = default_registry().build_from("audio_encoder", config.audio_encoder)
        self.sample_rate = self.audio_encoder.sample_rate
        self.video_streams = {}

    def score(self, candidates: Tensor, video) -> Tensor:
        b, n = candidates.shape[:2]
        features = self.audio_encoder.encode(candidates.flatten(0, 1)).values  # [b n, t, d]
        return features.mean(dim=(1, 2)).view(b, n)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="reranker", name="loudest", build=Loudest, config=LoudestConfig,
        description="mean audio feature (tests only)",
    ))
    register(ComponentSpec(
        kind="visual_encoder", name="mean_colour", build=MeanColour, config=MeanColourConfig,
        description="mean colour per frame (tests only)",
    ))
