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

from v2a.evaluate.options import EvaluationOptionError
from v2a.evaluate.pairing import PairAudio
from v2a.interfaces import AudioEncoder
from v2a.metrics.frechet import Moments, frechet_of
from v2a.metrics.spectral import mfcc
from v2a.recipe import ComponentChoice, Recipe, build_frozen
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

    def bias_note(self) -> str | None:
        """A note when a side has no more frames than dimensions (a biased distance), or None."""
        frames = min(self.generated.count, self.reference.count)
        if frames > self.generated.dim:
            return None
        return (f"{self.label} rests on {frames} frames of {self.generated.dim} dimensions: its "
                "covariances are rank-deficient and the distance is biased upwards; evaluate "
                "more clips")


def encoder_choice(name: str, registry: Registry, recipe: Recipe | None = None
                   ) -> ComponentChoice:
    """The recipe choice that builds the audio encoder ``name``: ``codec_latents`` wraps the
    recipe's codec; an encoder the recipe's ``audio_encoder`` slot uses takes the slot's options
    (BEATs with its weights file, say), except ``mel``, which keeps its defaults so that FDM
    compares across recipes; any other encoder takes its defaults."""
    options: dict[str, Any] = {}
    if recipe is not None and name == "codec_latents":
        options = {"codec": recipe.choice("codec").as_data()}
    elif recipe is not None and name != "mel" and recipe.has("audio_encoder"):
        own = recipe.choice("audio_encoder")
        if own.plugin == name:
            return own
    return ComponentChoice(kind="audio_encoder", plugin=name, options=options,
                           config=registry.config_for("audio_encoder", name, options))


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
                   notes: list[str]) -> list[FrameFeatures]:
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
            choice = encoder_choice(base, registry, recipe)
            built[base] = (build_frozen(choice).to(device), choice.as_data())
        encoder, options = built[base]
        codec = getattr(encoder, "codec", None) if base == "codec_latents" else None
        features.append(FrameFeatures(
            name=name, label=LABELS.get(name, f"FD {name}"), encoder=encoder, options=options,
            channels=int(codec.channels) if codec is not None else 1,
            transform=mfcc if name in derived else None,
        ))
    return features


def frames_of(encoder: AudioEncoder, wav: Tensor, device: torch.device) -> np.ndarray:
    """The encoder's frames ``[t, d]`` (float64) of one waveform ``[c, n]``."""
    seq = encoder.encode(wav[None].to(device))
    values = seq.values[0]
    if seq.mask is not None:
        values = values[seq.mask[0]]
    return values.double().cpu().numpy()


def add_frames(features: list[FrameFeatures], audio: PairAudio, device: torch.device) -> None:
    """Both sides' frames of one pair into each distance's statistics (one encoder pass per
    encoder, shared by the distances that read it)."""
    outputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with torch.inference_mode():
        for feat in features:
            key = id(feat.encoder)
            if key not in outputs:
                gen, ref = audio.get(int(feat.encoder.sample_rate), feat.channels)
                outputs[key] = (frames_of(feat.encoder, gen, device),
                                frames_of(feat.encoder, ref, device))
            gen_frames, ref_frames = outputs[key]
            if feat.transform is not None:
                gen_frames, ref_frames = feat.transform(gen_frames), feat.transform(ref_frames)
            feat.generated.add(gen_frames)
            feat.reference.add(ref_frames)
