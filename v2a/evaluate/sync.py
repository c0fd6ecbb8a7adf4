"""The sync score: the recipe's reranker scores each clip's audio against its video.

The reranker is any registered :class:`~v2a.interfaces.Reranker` (a contrastive model trained by
``v2a train``, or a wrapper around a pre-trained synchronisation model); the video streams it
reads are built by :func:`v2a.features.encode_video`, as for reranking at generation time. The
score of a set is the mean over its clips; higher is better.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from v2a.evaluate.options import EvaluationError
from v2a.evaluate.pairing import PairAudio
from v2a.evaluate.provenance import model_record
from v2a.features import encode_video
from v2a.interfaces import Reranker, VisualEncoder
from v2a.media import MediaError, probe
from v2a.recipe import ComponentChoice, Recipe, build_frozen
from v2a.tasks import exported_weights
from v2a.weights import is_random


class SyncScorer:
    """The recipe's reranker and the visual encoders it reads, scoring one audio against its
    video; the video streams are built by :func:`v2a.features.encode_video`, as for reranking at
    generation time."""

    def __init__(self, *, plugin: str, reranker: Reranker, encoders: dict[str, VisualEncoder],
                 device: torch.device, record: dict[str, Any] | None = None):
        self.reranker = reranker.to(device)
        self.plugin = plugin
        self.record = record  # the reranker and its visual encoders, as results.json records them
        self.sample_rate = int(reranker.sample_rate)
        self.encoders = {name: encoder.to(device) for name, encoder in encoders.items()}
        self.device = device

    @torch.inference_mode()
    def streams(self, video: Path, seconds: float) -> dict:
        try:
            info = probe(video)
            length = info.video_duration or info.duration or seconds
            return encode_video(self.encoders, video, min(seconds, length), device=self.device)
        except MediaError as exc:
            raise EvaluationError(str(exc)) from None

    @torch.inference_mode()
    def score(self, wav: Tensor, streams: dict) -> float:
        """Score of ``wav [c, n]`` (at :attr:`sample_rate`) against the video ``streams``."""
        video = {name: streams[name] for name in self.reranker.video_streams}
        candidates = wav[None, None].to(self.device)  # [1, 1, c, n]
        return float(self.reranker.score(candidates, video)[0, 0])

    def score_pair(self, audio: PairAudio, video: Path) -> dict[str, float]:
        """Scores of both sides of a pair (the generated side alone without a reference)
        against their video."""
        gen, ref = audio.get(self.sample_rate)
        streams = self.streams(video, gen.shape[1] / self.sample_rate)
        scores = {"generated": self.score(gen, streams)}
        if ref is not None:
            scores["reference"] = self.score(ref, streams)
        return scores

    def summary(self, scores: list[dict[str, float]]) -> dict[str, Any] | None:
        """Mean score of each side over the clips; None without any."""
        if not scores:
            return None
        return {"reranker": self.plugin, "clips": len(scores),
                **{side: float(np.mean([s[side] for s in scores])) for side in scores[0]}}


def trained_reranker(choice: ComponentChoice, checkpoint: Path | None, notes: list[str]
                     ) -> ComponentChoice | None:
    """The reranker's choice with the weights that make its score mean something: the weights a
    training run folder ``checkpoint`` exported for the ``reranker`` slot
    (:func:`v2a.tasks.exported_weights`; they replace the recipe's), else the recipe's own;
    None (with a note) when it stays untrained (``weights: none``)."""
    trained = exported_weights(checkpoint, "reranker") if checkpoint is not None else None
    if checkpoint is not None and trained is None:
        notes.append(f"{checkpoint} holds no trained weights for the reranker, so it keeps the "
                     "weights its recipe gives it")
    has_weights = dataclasses.is_dataclass(choice.config) and hasattr(choice.config, "weights")
    if has_weights and trained is not None:
        return dataclasses.replace(
            choice, config=dataclasses.replace(choice.config, weights=str(trained)))
    if has_weights and is_random(choice.config.weights):
        notes.append(f"sync score skipped: the reranker {choice.plugin!r} is untrained (weights: "
                     "none); give --checkpoint RUN, a run that trained it, or reranker.weights=FILE")
        return None
    return choice


def build_sync_scorer(recipe: Recipe | None, checkpoint: Path | None, device: torch.device,
                      notes: list[str]) -> SyncScorer | None:
    """A :class:`SyncScorer` for the recipe's reranker, or None (with a note saying why): the
    reranker must be trained (:func:`trained_reranker`) and every video stream it reads must
    have a visual encoder in the recipe."""
    if recipe is None or not recipe.has("reranker"):
        return None
    choice = recipe.choice("reranker")
    if choice.plugin == "none":
        notes.append("sync score skipped: the recipe's reranker is 'none', which scores nothing")
        return None
    choice = trained_reranker(choice, checkpoint, notes)
    if choice is None:
        return None
    reranker = build_frozen(choice)
    encoders, records = {}, {}
    for name in reranker.video_streams:
        slot = f"visual_encoders.{name}"
        if not recipe.has(slot):
            notes.append(f"sync score skipped: the reranker reads the visual stream {name!r}, which "
                         "no visual encoder of the recipe provides")
            return None
        encoders[name] = build_frozen(recipe.choice(slot))
        records[name] = model_record(recipe.choice(slot).as_data())
    record = {**model_record(choice.as_data()), "visual_encoders": records}
    return SyncScorer(plugin=choice.plugin, reranker=reranker, encoders=encoders, device=device,
                      record=record)
