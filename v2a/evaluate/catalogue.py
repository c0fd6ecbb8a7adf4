"""The metric catalogue: every metric ``v2a evaluate --metrics`` knows, what it needs, and the
protocols (``--protocol``), each an ordered list of metric names laid out as its paper's table.

A :class:`Metric` says what it reads (reference audio, videos, ground-truth events, a recipe),
which plug-in of which kind computes its features, its label, unit and direction.
:func:`skip_reason` says in one sentence why a metric cannot run with what was given (its
plug-in is not installed, there is no reference, ...): a metric is then listed as skipped with
that sentence, never computed some other way.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from v2a.evaluate.options import EvaluationOptionError

if TYPE_CHECKING:  # annotations only: `v2a evaluate --help` lists the metrics without torch
    from v2a.registry import Registry

REFERENCE, VIDEOS, EVENTS, RECIPE = "reference", "videos", "events", "recipe"
TEXT = "text"  # a text per clip: --captions, or the classes of ground-truth events
LOWER, HIGHER, NEITHER = "lower", "higher", "neither"  # NEITHER: a description, not a score

FRECHET = "frechet"  # a Fréchet distance between the frames of an audio encoder
ONSETS = "onsets"  # onset scores against ground-truth events (the synthetic benchmark)
ONSETS_VS_REFERENCE = "onsets_vs_reference"  # onset accuracy / AP against the reference's onsets
CLASSES = "classes"  # KL divergence / Inception Score of an AudioClassifier's probabilities
NOVELTY = "novelty"  # novelty-curve correlation with the reference
OFFSETS = "offsets"  # a SyncClassifier's predicted audio-video offsets (DeSync, SS)
SEMANTIC = "semantic"  # an audio-video embedding cosine (ImageBind, Wav2CLIP)
TEXT_AUDIO = "text_audio"  # an audio-text embedding cosine (the CLAP score)
SYNC = "sync"  # the recipe reranker's score
EVENT_CLASSES = "event_classes"  # the synthetic classes of detected onsets, no timing


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One metric: ``family`` says which part of the engine computes it; ``plugin`` is the
    ``(kind, name)`` of the plug-in whose features it reads (None: the recipe's, or none);
    ``video_plugin`` that of the visual encoder a semantic metric compares them with (its
    embeddings in the same space); ``capability`` the protocol of :mod:`v2a.interfaces` that
    plug-in must implement beyond its kind (``AudioClassifier``, ``SyncClassifier``);
    ``encoder`` the ``--encoders`` name of a Fréchet distance; ``pending`` what v2a evaluate
    lacks to compute the metric (None: nothing)."""

    name: str
    label: str
    family: str
    better: str  # LOWER, HIGHER or NEITHER
    unit: str
    needs: frozenset[str] = field(default_factory=frozenset)
    plugin: tuple[str, str] | None = None
    video_plugin: tuple[str, str] | None = None
    capability: str | None = None
    encoder: str | None = None
    source: str = ""
    pending: str | None = None


def _fd(name: str, label: str, encoder: str, source: str, *, plugin: bool = True,
        needs: frozenset[str] = frozenset({REFERENCE})) -> Metric:
    return Metric(name=name, label=label, family=FRECHET, better=LOWER, unit="", needs=needs,
                  plugin=("audio_encoder", encoder) if plugin else None, encoder=encoder,
                  source=source)


def _classes(name: str, label: str, plugin: str, *, kl: bool) -> Metric:
    return Metric(name=name, label=label, family=CLASSES, better=LOWER if kl else HIGHER,
                  unit="nats" if kl else "", needs=frozenset({REFERENCE}) if kl else frozenset(),
                  plugin=("audio_encoder", plugin), capability="AudioClassifier",
                  source="Kong et al. 2020 (PANNs); Koutini et al. 2022 (PaSST); av-benchmark")


_METRICS = (
    _fd("fad", "FAD (VGGish)", "vggish", "Kilgour et al. 2019, Fréchet Audio Distance"),
    _fd("fdd", "FD codec latents (FDD)", "codec_latents", "MaskVAT (Pascual et al. 2024)",
        plugin=False, needs=frozenset({REFERENCE, RECIPE})),
    _fd("fdm", "FD mel (FDM)", "mel", "MaskVAT (Pascual et al. 2024)"),
    _fd("fd_mfcc", "FD MFCC", "mfcc", "v2a (MFCC of the FDM frames)", plugin=False),
    _fd("fd_vggish", "FD VGGish", "vggish", "Hershey et al. 2017 (VGGish); av-benchmark"),
    _fd("fd_panns", "FD PANNs", "panns_cnn14", "Kong et al. 2020 (PANNs); av-benchmark"),
    _fd("fd_passt", "FD PaSST", "passt", "Koutini et al. 2022 (PaSST); av-benchmark"),
    _classes("kl_panns", "KL PANNs", "panns_cnn14", kl=True),
    _classes("kl_passt", "KL PaSST", "passt", kl=True),
    _classes("is_panns", "IS PANNs", "panns_cnn14", kl=False),
    _classes("is_passt", "IS PaSST", "passt", kl=False),
    Metric(name="ns", label="NS (novelty correlation)", family=NOVELTY, better=HIGHER, unit="",
           needs=frozenset({REFERENCE}), source="MaskVAT (Pascual et al. 2024)"),
    Metric(name="onset_f1", label="onset F1", family=ONSETS, better=HIGHER, unit="",
           needs=frozenset({EVENTS}), source="v2a synthetic benchmark"),
    Metric(name="onset_acc", label="onset accuracy", family=ONSETS_VS_REFERENCE, better=HIGHER,
           unit="", needs=frozenset({REFERENCE}),
           source="Du et al. 2023 (CondFoleyGen), as MMAudio evaluates onsets"),
    Metric(name="onset_ap", label="onset AP", family=ONSETS_VS_REFERENCE, better=HIGHER, unit="",
           needs=frozenset({REFERENCE}),
           source="Du et al. 2023 (CondFoleyGen), as MMAudio evaluates onsets"),
    Metric(name="ss", label="SS (SparseSync offset)", family=OFFSETS, better=LOWER, unit="s",
           needs=frozenset({VIDEOS}), plugin=("reranker", "sparsesync"),
           capability="SyncClassifier", source="Iashin et al. 2022 (SparseSync); MaskVAT"),
    Metric(name="desync", label="DeSync (Synchformer)", family=OFFSETS, better=LOWER, unit="s",
           needs=frozenset({VIDEOS}), plugin=("reranker", "synchformer"),
           capability="SyncClassifier", source="Iashin et al. 2024 (Synchformer); av-benchmark"),
    Metric(name="ib_score", label="IB-score (ImageBind)", family=SEMANTIC, better=HIGHER, unit="",
           needs=frozenset({VIDEOS}), plugin=("audio_encoder", "imagebind"),
           video_plugin=("visual_encoder", "imagebind"),
           source="Girdhar et al. 2023 (ImageBind); av-benchmark"),
    Metric(name="clap", label="CLAP score", family=TEXT_AUDIO, better=HIGHER, unit="",
           needs=frozenset({TEXT}), plugin=("audio_encoder", "clap"),
           source="Wu et al. 2023 (LAION-CLAP); av-benchmark"),
    Metric(name="wav2clip", label="Wav2CLIP score", family=SEMANTIC, better=HIGHER, unit="",
           needs=frozenset({VIDEOS}), plugin=("audio_encoder", "wav2clip"),
           video_plugin=("visual_encoder", "clip"),
           source="Wu et al. 2022 (Wav2CLIP)"),
    Metric(name="text_class_acc", label="class accuracy against the text", family=EVENT_CLASSES,
           better=HIGHER, unit="", needs=frozenset({TEXT}),
           source="v2a synthetic benchmark (text-only generation)"),
    Metric(name="class_shares", label="class shares", family=EVENT_CLASSES, better=NEITHER,
           unit="", source="v2a synthetic benchmark"),
    Metric(name="sync", label="sync score", family=SYNC, better=HIGHER, unit="",
           needs=frozenset({VIDEOS, RECIPE}),
           source="the recipe's reranker (a contrastive sync model, MaskVAT)"),
)

#: Metric name → :class:`Metric`.
CATALOGUE: dict[str, Metric] = {m.name: m for m in _METRICS}

#: Protocol → its metrics, in the order of its paper's table. ``maskvat``: the MaskVAT paper's
#: columns (FAD, FDD, FDM, semantic, SS, NS; the semantic column is an audio-video embedding
#: cosine, taken here as ImageBind's); ``av-benchmark``: the set av-benchmark reports (its
#: LAION-CLAP score where the clips have texts);
#: ``synth``: the synthetic benchmark against ``v2a synth``'s events.
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "maskvat": ("fad", "fdd", "fdm", "ib_score", "ss", "ns"),
    "av-benchmark": ("fd_passt", "fd_panns", "fd_vggish", "kl_panns", "kl_passt", "is_panns",
                     "is_passt", "ib_score", "desync", "clap"),
    "synth": ("fdm", "fd_mfcc", "fdd", "onset_f1", "sync"),
}

#: What a need is, for the skip sentence.
_NEEDS = {
    REFERENCE: "it compares with reference audio and no --reference was given",
    VIDEOS: "it reads the videos and none were found (give --videos DIR)",
    EVENTS: "it needs ground-truth events (--events FILE, or REF/events.jsonl)",
    RECIPE: "it needs a --recipe",
    TEXT: ("it compares each clip with its text and no clip has one (give --captions FILE, a "
           "CSV or TSV of clip name and caption)"),
}


def generic_frechet(name: str, registry: Registry) -> Metric | None:
    """``fd_<encoder>`` for any registered audio encoder outside the catalogue, or None."""
    encoder = name[3:] if name.startswith("fd_") else ""
    if not encoder or encoder not in registry.names("audio_encoder"):
        return None
    return _fd(name, f"FD {encoder}", encoder, "Fréchet distance of a registered audio encoder")


def frechet_metric(encoder: str) -> Metric:
    """The catalogue's Fréchet metric of an ``--encoders`` name (``mel`` → ``fdm``), else
    ``fd_<encoder>``."""
    for metric in _METRICS:
        if metric.family == FRECHET and metric.encoder == encoder and metric.name != "fad":
            return metric
    return _fd(f"fd_{encoder}", f"FD {encoder}", encoder,
               "Fréchet distance of a registered audio encoder")


def metrics_named(names: list[str], registry: Registry) -> list[Metric]:
    """The metrics of ``--metrics`` (order kept, repeats dropped); an unknown name is an
    :class:`EvaluationOptionError` with the closest known name."""
    found = []
    for name in dict.fromkeys(names):
        metric = CATALOGUE.get(name) or generic_frechet(name, registry)
        if metric is None:
            known = [*CATALOGUE, *(f"fd_{e}" for e in registry.names("audio_encoder"))]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the known ones are {', '.join(CATALOGUE)}"
            raise EvaluationOptionError(f"--metrics names {name!r}, which is not a metric; {hint}")
        found.append(metric)
    return found


def protocol_metrics(protocol: str, registry: Registry) -> list[Metric]:
    """The metrics of ``--protocol``; an unknown protocol is an :class:`EvaluationOptionError`."""
    if protocol not in PROTOCOLS:
        close = difflib.get_close_matches(protocol, list(PROTOCOLS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"the protocols are {', '.join(PROTOCOLS)}"
        raise EvaluationOptionError(f"--protocol {protocol!r} is not a protocol; {hint}")
    return metrics_named(list(PROTOCOLS[protocol]), registry)


def skip_reason(metric: Metric, *, registry: Registry, given: set[str]) -> str | None:
    """Why ``metric`` cannot run (one sentence, no full stop), or None when it can: v2a
    evaluate cannot compute it yet (``pending``), one of its plug-ins (audio, video) is not
    registered, or something it needs (of :data:`REFERENCE`, :data:`VIDEOS`, :data:`EVENTS`,
    :data:`RECIPE`, :data:`TEXT`) is not among ``given``."""
    if metric.pending is not None:
        return f"{metric.label} skipped: {metric.pending}"
    for plugin in (metric.plugin, metric.video_plugin):
        if plugin is not None and plugin[1] not in registry.names(plugin[0]):
            return f"{metric.label} skipped: no {plugin[0]} plug-in named {plugin[1]!r} is installed"
    for need in (REFERENCE, EVENTS, RECIPE, VIDEOS, TEXT):
        if need in metric.needs and need not in given:
            return f"{metric.label} skipped: {_NEEDS[need]}"
    return None
