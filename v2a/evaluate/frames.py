"""Frame features for the Fréchet distances: which audio encoders, built how, and each side's
running statistics of their frames.

One distance per name of ``--encoders``: ``mel`` (log-mel frames: FDM), ``mfcc``
(:func:`v2a.metrics.spectral.mfcc` of the same frames) and ``codec_latents`` of the recipe's
codec (FDD), or any registered :class:`~v2a.interfaces.AudioEncoder`. Every frame of every clip
of a side is pooled into that side's :class:`~v2a.metrics.frechet.Moments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from v2a.evaluate.catalogue import frechet_metric
from v2a.evaluate.models import ModelChoice, model_choice
from v2a.evaluate.options import EvaluationOptionError, Options
from v2a.evaluate.pairing import PairAudio
from v2a.evaluate.provenance import model_key, model_record
from v2a.evaluate.store import FeatureStore
from v2a.interfaces import AudioEncoder
from v2a.metrics.frechet import Moments, frechet_of
from v2a.metrics.spectral import mfcc
from v2a.recipe import Recipe, build_frozen
from v2a.registry import Registry, default_registry

LABELS = {"mel": "FD mel (FDM)", "mfcc": "FD MFCC", "codec_latents": "FD codec latents (FDD)"}


@dataclass
class FrameFeatures:
    """One Fréchet distance: its audio encoder, an optional transform of the encoder's frames
    (MFCC), and the running statistics of both sides."""

    name: str
    label: str
    encoder: AudioEncoder
    options: dict[str, Any]  # the encoder's plug-in and options, every default filled in
    channels: int = 1
    metric: str = ""  # the catalogue's name of the distance (fdm, fd_mfcc, fdd, fd_<name>)
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    generated: Moments = field(default_factory=Moments)
    reference: Moments = field(default_factory=Moments)

    def result(self) -> dict[str, Any]:
        """The distance and what it rests on (an entry of the results' ``frechet``)."""
        return {"label": self.label, "distance": frechet_of(self.generated, self.reference),
                "frames_generated": self.generated.count, "frames_reference": self.reference.count,
                "dim": self.generated.dim, "encoder_rate": float(self.encoder.rate),
                "sample_rate": int(self.encoder.sample_rate), "encoder": self.options,
                **({"transform": "mfcc"} if self.transform is mfcc else {})}

    @property
    def record(self) -> dict[str, Any]:
        """The encoder as ``results.json`` records it (:func:`~v2a.evaluate.provenance.model_record`)."""
        return model_record(self.options)

    @property
    def key(self) -> str:
        """The feature cache's key of the encoder's frames (the MFCC transform is applied after)."""
        return model_key(self.record, sample_rate=int(self.encoder.sample_rate),
                         channels=self.channels, features="frames")

    def bias_note(self) -> str | None:
        """A note when a side has no more frames than dimensions (a biased distance), or None."""
        frames = min(self.generated.count, self.reference.count)
        if frames > self.generated.dim:
            return None
        return (f"{self.label} rests on {frames} frames of {self.generated.dim} dimensions: its "
                "covariances are rank-deficient and the distance is biased upwards; evaluate "
                "more clips")


def encoder_choice(name: str, registry: Registry, recipe: Recipe | None, options: Options
                   ) -> ModelChoice:
    """The choice that builds the audio encoder ``name`` (:func:`v2a.evaluate.models.model_choice`):
    ``codec_latents`` wraps the recipe's codec; an encoder the recipe's ``audio_encoder`` slot
    uses takes the slot's options (BEATs with its weights file, say), except ``mel``, which keeps
    its defaults so that FDM compares across recipes; any other encoder takes its defaults and
    ``--model``."""
    base: dict[str, Any] = {}
    if recipe is not None and name == "codec_latents":
        base = {"codec": recipe.choice("codec").as_data()}
    model = model_choice("audio_encoder", name, registry=registry, options=options, recipe=recipe,
                         base=base)
    if name == "codec_latents" and not model.from_recipe:  # the recipe's codec, as the recipe says
        return ModelChoice(model.choice, from_recipe=recipe is not None)
    return model


def check_encoder_names(names: list[str], known: list[str], derived: dict[str, str]) -> None:
    """An :class:`EvaluationOptionError` for a name that is neither a registered audio encoder
    nor derived from one."""
    for name in names:
        if name not in known and name not in derived:
            raise EvaluationOptionError(
                f"--encoders names {name!r}, which is not a registered audio encoder; the "
                f"registered ones are {', '.join(known) or 'none'}, and mfcc (from mel)"
            )


def build_features(names: list[str], recipe: Recipe | None, device: torch.device,
                   notes: list[str], options: Options) -> list[FrameFeatures]:
    """The Fréchet distances asked for, their encoders built as training builds them (frozen,
    fixed seed); encoders shared where two distances read the same one (mel and MFCC)."""
    registry = default_registry()
    known = registry.names("audio_encoder")
    derived = {"mfcc": "mel"} if "mfcc" not in known else {}
    check_encoder_names(names, known, derived)
    built: dict[str, tuple[AudioEncoder, dict[str, Any]]] = {}
    features = []
    for name in names:
        if name == "codec_latents" and (recipe is None or not recipe.has("codec")):
            notes.append("FD codec latents (FDD) skipped: it needs the codec of a --recipe")
            continue
        base = derived.get(name, name)
        if base not in built:
            if base not in known:
                raise EvaluationOptionError(f"mfcc is computed from the {base!r} audio encoder, "
                                            "which is not registered")
            choice = encoder_choice(base, registry, recipe, options).choice
            built[base] = (build_frozen(choice).to(device), choice.as_data())
        encoder, encoder_options = built[base]
        codec = getattr(encoder, "codec", None) if base == "codec_latents" else None
        features.append(FrameFeatures(
            name=name, label=LABELS.get(name, f"FD {name}"), encoder=encoder,
            options=encoder_options,
            metric=frechet_metric(name).name,
            channels=int(codec.channels) if codec is not None else 1,
            transform=mfcc if name in derived else None,
        ))
    return features


def frames_of(encoder: AudioEncoder, wav: Tensor, device: torch.device) -> Tensor:
    """The encoder's frames ``[t, d]`` of one waveform ``[c, n]`` (on the CPU)."""
    seq = encoder.encode(wav[None].to(device))
    values = seq.values[0]
    if seq.mask is not None:
        values = values[seq.mask[0]]
    return values.cpu()


def add_frames(features: list[FrameFeatures], audio: PairAudio, device: torch.device,
               store: FeatureStore) -> None:
    """Both sides' frames of one pair into each distance's statistics (one encoder pass per
    encoder and file, shared by the distances that read it, and kept in ``store``)."""
    outputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with torch.inference_mode():
        for feat in features:
            key = id(feat.encoder)
            if key not in outputs:
                gen, ref = audio.get(int(feat.encoder.sample_rate), feat.channels)
                samples = gen.shape[1]
                outputs[key] = tuple(
                    store.get(feat.key, path, samples,
                              lambda wav=wav: frames_of(feat.encoder, wav, device)).double().numpy()
                    for path, wav in ((audio.pair.generated, gen), (audio.pair.reference, ref)))
            gen_frames, ref_frames = outputs[key]
            if feat.transform is not None:
                gen_frames, ref_frames = feat.transform(gen_frames), feat.transform(ref_frames)
            feat.generated.add(gen_frames)
            feat.reference.add(ref_frames)
