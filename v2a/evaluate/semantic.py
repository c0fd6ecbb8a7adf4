"""IB-score and the Wav2CLIP score: how close each clip's sound lies to its video in an
embedding space that audio and images share.

A semantic metric names an audio model (an ``audio_encoder`` plug-in whose ``encode`` gives
``[b, t, d]`` in the shared space) and a video model (a ``visual_encoder`` plug-in giving
``[b, t', d]`` in the same space): ImageBind's audio and vision towers for ``ib_score``, Wav2CLIP
and CLIP's image encoder (Wav2CLIP's target space) for ``wav2clip``. For each clip:

* the audio embedding of the clip (mono at the audio model's rate), averaged over its steps and
  L2-normalised;
* the video's embeddings of the frames the visual encoder samples (at its ``fps``) over the same
  seconds of the clip's video (:func:`v2a.features.encode_video`), averaged over time and
  L2-normalised;
* their cosine, in float64. A mean embedding of zero has no direction and counts as cosine 0.

The set's value is the mean cosine over the clips of the generated side; the reference's audio
with the same videos gives the reference value beside it. No reference is needed, only the
videos. The audio embeddings are kept in the feature cache; the video's are computed per clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from v2a.evaluate.catalogue import SEMANTIC, Metric
from v2a.evaluate.frames import encoder_choice, frames_of
from v2a.evaluate.models import visual_model_choice
from v2a.evaluate.selection import build_scorers
from v2a.evaluate.options import EvaluationError, Options
from v2a.evaluate.pairing import PairAudio, common_seconds
from v2a.evaluate.provenance import model_key, model_record
from v2a.evaluate.store import FeatureStore
from v2a.features import encode_video
from v2a.interfaces import AudioEncoder, VisualEncoder
from v2a.media import MediaError
from v2a.recipe import Recipe, build_frozen
from v2a.registry import Registry

POOLING = "mean over time, L2-normalised"
_NORM_FLOOR = 1e-12  # below this a mean embedding has no direction


def direction(embeddings: np.ndarray) -> np.ndarray:
    """The L2-normalised mean over time of ``[t, d]`` embeddings (zeros where the mean is zero)."""
    mean = embeddings.astype(np.float64).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), _NORM_FLOOR)


def side_cosines(audio: PairAudio, sides: tuple[torch.Tensor, torch.Tensor | None],
                 target: np.ndarray, *, store: FeatureStore, key: str, model: AudioEncoder,
                 device: torch.device, samples: int | None = None) -> dict[str, float]:
    """The cosine of each side's pooled audio embedding (``sides``: generated and reference
    waveforms, the first ``samples`` of each, through the feature ``store`` under ``key``) with
    the unit vector ``target``: ``{"generated": ..., "reference": ...}`` (no reference: absent)."""
    found = {}
    for side, path, wav in (("generated", audio.pair.generated, sides[0]),
                            ("reference", audio.pair.reference, sides[1])):
        if wav is not None:
            count = wav.shape[1] if samples is None else samples
            heard = store.get(key, path, count, lambda w=wav[:, :count]: frames_of(
                model, w, device))
            found[side] = float(direction(heard.double().numpy()) @ target)
    return found


def mean_cosines(per_clip: list[dict[str, float]]) -> tuple[float, float | None] | None:
    """(generated mean cosine, reference mean cosine: None unless every clip has one) over the
    clips of :func:`side_cosines`, or None without any clip."""
    if not per_clip:
        return None
    reference = [c["reference"] for c in per_clip if "reference" in c]
    return (float(np.mean([c["generated"] for c in per_clip])),
            float(np.mean(reference)) if len(reference) == len(per_clip) else None)


class SemanticScorer:
    """An audio model and a visual model embedding into one space, and how each clip is scored."""

    def __init__(self, *, metric: str, audio_model: AudioEncoder, video_model: VisualEncoder,
                 record: dict[str, Any], device: torch.device):
        self.metric = metric
        self.audio_model = audio_model.to(device)
        self.video_model = video_model.to(device)
        self.record = record
        self.device = device
        self.sample_rate = int(audio_model.sample_rate)

    @property
    def key(self) -> str:
        """The feature cache's key of the audio model's embeddings."""
        audio_record = {k: v for k, v in self.record.items() if k != "visual_encoder"}
        return model_key(audio_record, sample_rate=self.sample_rate, channels=1,
                         features="semantic embeddings")

    @torch.inference_mode()
    def clip_cosines(self, audio: PairAudio, video: Path, store: FeatureStore) -> dict[str, float]:
        """Each side's cosine with the clip's video, over the seconds both the audio and the
        video last."""
        gen, ref = audio.get(self.sample_rate)
        duration = common_seconds(video, gen.shape[1], self.sample_rate)
        try:
            stream = encode_video({"video": self.video_model}, video, duration,
                                  device=self.device)["video"]
        except MediaError as exc:
            raise EvaluationError(str(exc)) from None
        values = stream.values[0]
        if stream.mask is not None:
            values = values[stream.mask[0]]
        seen = direction(values.float().cpu().numpy())
        samples = min(gen.shape[1], round(duration * self.sample_rate))
        return side_cosines(audio, (gen, ref), seen, store=store, key=self.key,
                            model=self.audio_model, device=self.device, samples=samples)

    values = staticmethod(mean_cosines)  # (generated, reference) mean cosines

    def settings(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "fps": float(self.video_model.fps),
                "pooling": POOLING}


def build_semantic_scorer(metric: Metric, recipe: Recipe | None, registry: Registry,
                          device: torch.device, options: Options) -> SemanticScorer | str:
    """The :class:`SemanticScorer` of a semantic metric, or the sentence saying why it is
    skipped. The audio model is chosen as :func:`v2a.evaluate.frames.encoder_choice` chooses it,
    the visual one by :func:`v2a.evaluate.models.visual_model_choice`."""
    audio_plugin, video_plugin = metric.plugin[1], metric.video_plugin[1]
    audio_choice = encoder_choice(audio_plugin, registry, recipe, options).choice
    video_choice = visual_model_choice(video_plugin, registry=registry, options=options,
                                       recipe=recipe).choice
    audio_model, video_model = build_frozen(audio_choice), build_frozen(video_choice)
    dims = getattr(audio_model, "dim", None), getattr(video_model, "dim", None)
    if None not in dims and dims[0] != dims[1]:
        return (f"{metric.label} skipped: {audio_plugin!r} embeds audio in {dims[0]} dimensions "
                f"and {video_plugin!r} embeds frames in {dims[1]}, so they share no space; give "
                "both models the options of one shared space")
    record = {**model_record(audio_choice.as_data()),
              "visual_encoder": model_record(video_choice.as_data())}
    return SemanticScorer(metric=metric.name, audio_model=audio_model, video_model=video_model,
                          record=record, device=device)


def build_semantic_scorers(metrics: list[Metric], recipe: Recipe | None, registry: Registry,
                           device: torch.device, skipped: dict[str, str], options: Options,
                           ) -> dict[str, SemanticScorer]:
    """Metric name → :class:`SemanticScorer` for the running semantic ``metrics``; those that
    cannot run go into ``skipped``."""
    return build_scorers(metrics, SEMANTIC, skipped, lambda metric: build_semantic_scorer(
        metric, recipe, registry, device, options))
