"""The ``none`` reranker (:class:`KeepFirst`): no weights, no scoring; every candidate gets the
same score, so selection keeps the first one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from v2a import ComponentSpec, FeatureSequence, Reranker, hookimpl


@dataclass
class KeepFirstConfig:
    sample_rate: int = 44100
    """Hz of the candidates it is given (it reads none of them)"""


class KeepFirst(Reranker):
    """Gives every candidate the same score, so selection keeps the first one."""

    def __init__(self, config: KeepFirstConfig):
        super().__init__()
        self.sample_rate = config.sample_rate
        self.video_streams = {}

    def score(self, candidates: Tensor, video: Mapping[str, FeatureSequence]) -> Tensor:
        b, n = candidates.shape[:2]
        return torch.zeros(b, n, dtype=candidates.dtype, device=candidates.device)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="reranker", name="none", build=KeepFirst, config=KeepFirstConfig,
        properties=lambda config: {"sample_rate": config.sample_rate, "video_streams": {}},
        description="no reranking: keeps the first candidate",
    ))
