"""The ``none`` reranker's implementation (:class:`KeepFirst`; the plug-in is
:mod:`v2a_plugins.rerankers.keep_first`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from v2a import FeatureSequence, Reranker
from v2a_plugins.rerankers.keep_first import KeepFirstConfig


class KeepFirst(Reranker):
    """Gives every candidate the same score, so selection keeps the first one."""

    def __init__(self, config: KeepFirstConfig):
        super().__init__()
        self.sample_rate = config.sample_rate
        self.video_streams = {}

    def score(self, candidates: Tensor, video: Mapping[str, FeatureSequence]) -> Tensor:
        b, n = candidates.shape[:2]
        return torch.zeros(b, n, dtype=candidates.dtype, device=candidates.device)
