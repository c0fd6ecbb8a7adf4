"""KL divergence and Inception Score: the class probabilities of an
:class:`~v2a.interfaces.AudioClassifier` plug-in (PANNs CNN14, PaSST) for each clip.

One :class:`ClassScorer` per classifier plug-in the selected metrics read: each clip's
probabilities (``classify`` of the whole clip, mono at the classifier's rate; both sides of a
pair cut to their common length) are computed once per file and kept in the feature cache.
KL is :func:`v2a.metrics.classes.kl_divergence` (reference ‖ generated, mean over pairs), IS
:func:`v2a.metrics.classes.inception_score` of the generated set (and of the reference, beside
it), one split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from v2a.evaluate.catalogue import CLASSES, Metric
from v2a.evaluate.frames import encoder_choice
from v2a.evaluate.options import Options
from v2a.evaluate.pairing import PairAudio
from v2a.evaluate.provenance import model_key, model_record
from v2a.evaluate.store import FeatureStore
from v2a.interfaces import AudioClassifier, AudioEncoder
from v2a.metrics.classes import inception_score, kl_divergence
from v2a.recipe import Recipe, build_frozen
from v2a.registry import Registry

#: Inception Score splits and the seed of the shuffle before splitting: one split by default;
#: av-benchmark's 10 splits of a set shuffled with seed 2020 under ``--protocol av-benchmark``
#: (fewer when the set has fewer clips than that: the settings record how many).
SPLITS = 1
PROTOCOL_SPLITS = {"av-benchmark": (10, 2020)}


@dataclass(kw_only=True)
class ClassScorer:
    """One classifier and the probabilities ``[c]`` of each side's clips so far."""

    plugin: str
    classifier: AudioEncoder  # that is also an AudioClassifier
    record: dict[str, Any]
    splits: int = SPLITS
    shuffle_seed: int | None = None
    generated: list[np.ndarray] = field(default_factory=list)
    reference: list[np.ndarray] = field(default_factory=list)

    @property
    def key(self) -> str:
        return model_key(self.record, sample_rate=int(self.classifier.sample_rate), channels=1,
                         features="class probabilities")

    def add(self, audio: PairAudio, store: FeatureStore, device: torch.device) -> None:
        """Both sides' probabilities of one pair (the generated side alone without a reference)."""
        gen, ref = audio.get(int(self.classifier.sample_rate))

        def classify(wav):
            with torch.inference_mode():
                return self.classifier.classify(wav[None].to(device))[0].cpu()

        for side, path, wav in ((self.generated, audio.pair.generated, gen),
                                (self.reference, audio.pair.reference, ref)):
            if wav is not None:
                probabilities = store.get(self.key, path, wav.shape[1], lambda w=wav: classify(w))
                side.append(probabilities.double().numpy())

    def entry_values(self, metric: Metric) -> tuple[float, float | None] | None:
        """(value, reference value) of a KL or IS metric, or None without clips."""
        if not self.generated:
            return None
        multi = bool(self.classifier.multi_label)
        gen = np.stack(self.generated)
        if metric.better == "lower":  # KL
            if len(self.reference) != len(self.generated):
                return None
            return kl_divergence(np.stack(self.reference), gen, multi_label=multi), None
        reference = None
        if self.reference:
            reference = inception_score(np.stack(self.reference), multi_label=multi,
                                        splits=self.splits_for(len(self.reference)),
                                        shuffle_seed=self.shuffle_seed)
        return inception_score(gen, multi_label=multi, splits=self.splits_for(len(gen)),
                               shuffle_seed=self.shuffle_seed), reference

    def splits_for(self, clips: int) -> int:
        """The Inception Score's splits for a set of ``clips`` (never more than the clips)."""
        return max(1, min(self.splits, clips))

    def settings(self) -> dict[str, Any]:
        return {"sample_rate": int(self.classifier.sample_rate), "classes":
                len(self.classifier.class_names), "multi_label": bool(self.classifier.multi_label),
                "splits": self.splits_for(len(self.generated)), "shuffle_seed": self.shuffle_seed}


def build_class_scorers(metrics: list[Metric], recipe: Recipe | None, registry: Registry,
                        device: torch.device, skipped: dict[str, str], options: Options,
                        ) -> dict[str, ClassScorer]:
    """Plug-in name → :class:`ClassScorer` for the classifiers of the running KL/IS
    ``metrics``; a plug-in that is not an :class:`~v2a.interfaces.AudioClassifier` skips its
    metrics (into ``skipped``, one sentence each)."""
    scorers: dict[str, ClassScorer] = {}
    for metric in metrics:
        if metric.family != CLASSES or metric.name in skipped:
            continue
        plugin = metric.plugin[1]
        if plugin not in scorers:
            choice = encoder_choice(plugin, registry, recipe, options).choice
            model = build_frozen(choice).to(device)
            if not isinstance(model, AudioClassifier):
                skipped[metric.name] = (f"{metric.label} skipped: the audio_encoder plug-in "
                                        f"{plugin!r} gives no class probabilities (it is not an "
                                        "AudioClassifier)")
                continue
            splits, seed = PROTOCOL_SPLITS.get(options.protocol, (SPLITS, None))
            scorers[plugin] = ClassScorer(plugin=plugin, classifier=model, splits=splits,
                                          shuffle_seed=seed, record=model_record(choice.as_data()))
    return scorers
