"""The CLAP score: how close each clip's sound lies to its text in an embedding space that
audio and text share (LAION-CLAP's, the ``clap`` plug-in).

Each clip's text comes from ``--captions FILE`` when it is given: a CSV or TSV file with a
header, one row per clip, a name column (``name``, ``id``, ``stem``, ``clip``, ``file`` or
``path``: the clip's file name, with or without its suffix) and a text column (``caption``,
``text``, ``prompt`` or ``label``). av-benchmark's caption files (``name,caption``) and a
VGGSound-style table with a ``label`` column read as they are. Without ``--captions``, a
generated file's own text prompt (``v2a generate --prompt`` or a manifest's caption, recorded in
the file's tags and read by :func:`v2a.media.generated_prompt`) is its clip's text; a clip
without one takes the classes of its ground-truth events (``v2a synth``'s ``events.jsonl``): the
distinct class names in the order they first sound, joined by ", ".

For each clip: the audio model's embeddings of the clip (mono at its rate; one per 10 s for
CLAP), averaged over time and L2-normalised, against the L2-normalised embedding of its text
(:func:`v2a.evaluate.semantic.direction`); their cosine, in float64. The set's value is the mean
over the clips that have a text; the reference's audio with the same texts gives the reference
value beside it. Clips without a text are left out, and a note says how many.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from v2a.evaluate.catalogue import TEXT_AUDIO, Metric
from v2a.evaluate.frames import encoder_choice
from v2a.evaluate.options import EvaluationError, Options
from v2a.evaluate.pairing import GENERATE_SUFFIX, PairAudio, audio_sources
from v2a.evaluate.provenance import model_key, model_record
from v2a.evaluate.selection import build_scorers
from v2a.evaluate.semantic import POOLING, direction, mean_cosines, side_cosines
from v2a.evaluate.store import FeatureStore
from v2a.interfaces import AudioEncoder
from v2a.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES, generated_prompt
from v2a.recipe import Recipe, build_frozen
from v2a.registry import Registry
from v2a.synth import Event

#: The header names of a captions file's name and text columns, in the order they are looked for.
NAME_COLUMNS = ("name", "id", "stem", "clip", "file", "path")
TEXT_COLUMNS = ("caption", "text", "prompt", "label")
EVENT_CLASSES = "the classes of the ground-truth events"
GENERATED_PROMPTS = "the prompts recorded in the generated files"


@dataclass(frozen=True)
class ClipTexts:
    """Each clip's text (stem → text) and where the texts come from (for the settings)."""

    texts: dict[str, str]
    source: str


def caption_stem(name: str) -> str:
    """The stem a captions file's name means: ``clip.mp4``, ``dir/clip.v2a.wav`` and ``clip``
    all mean ``clip`` (only a media suffix is taken off, so ``clip.001`` stays itself)."""
    base = Path(name.strip()).name
    if Path(base).suffix.lower() in AUDIO_SUFFIXES + VIDEO_SUFFIXES:
        base = Path(base).stem
    return base.removesuffix(GENERATE_SUFFIX)


def _column(header: list[str], names: tuple[str, ...], path: Path, what: str) -> str:
    by_lower = {h.strip().lower(): h for h in header}
    for name in names:
        if name in by_lower:
            return by_lower[name]
    raise EvaluationError(f"the captions file {path} has no {what} column (its header is "
                          f"{', '.join(header) or 'empty'}); name one column "
                          f"{' or '.join(names)}")


def read_captions(path: Path) -> dict[str, str]:
    """Stem → text of a captions file (see the module docstring); rows without text are left
    out. An :class:`EvaluationError` when the file cannot be read, lacks the columns, or gives
    one clip two different texts."""
    if not path.is_file():
        raise EvaluationError(f"the captions file {path} does not exist; give a CSV or TSV file "
                              "with a header, e.g. name,caption")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"the captions file {path} cannot be read as UTF-8 text "
                              f"({type(exc).__name__})") from None
    first = text.splitlines()[0] if text.strip() else ""
    rows = csv.DictReader(text.splitlines(), delimiter="\t" if "\t" in first else ",")
    header = list(rows.fieldnames or [])
    name_column = _column(header, NAME_COLUMNS, path, "name")
    text_column = _column(header, TEXT_COLUMNS, path, "text")
    found: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        name, caption = (row.get(name_column) or "").strip(), (row.get(text_column) or "").strip()
        if not name or not caption:
            continue
        stem = caption_stem(name)
        if found.get(stem, caption) != caption:
            raise EvaluationError(f"the captions file {path} gives the clip {stem!r} two texts "
                                  f"(line {line}); give each clip one")
        found[stem] = caption
    return found


def texts_of_events(truth: dict[str, list[Event]]) -> dict[str, str]:
    """Stem → the distinct classes of its events in the order they first sound, joined by
    ", " (underscores read as spaces); clips without events have no text."""
    texts = {}
    for stem, events in truth.items():
        classes = dict.fromkeys(e.cls.replace("_", " ") for e in sorted(events, key=lambda e: e.time))
        if classes:
            texts[stem] = ", ".join(classes)
    return texts


def generated_prompts(folder: Path) -> dict[str, str]:
    """Stem → the text prompt recorded in the generated file of that stem in ``folder``
    (:func:`v2a.evaluate.pairing.audio_sources`, :func:`v2a.media.generated_prompt`); files
    without one are left out."""
    found = {stem: generated_prompt(path) for stem, path in audio_sources(folder).items()}
    return {stem: prompt for stem, prompt in found.items() if prompt is not None}


def clip_texts(options: Options, truth: dict[str, list[Event]]) -> ClipTexts:
    """The texts of the clips: ``--captions`` when given; else each generated file's recorded
    prompt (:func:`generated_prompts`), and the events' classes for the clips without one."""
    if options.captions is not None:
        return ClipTexts(texts=read_captions(options.captions),
                         source=f"captions {options.captions.name}")
    events = texts_of_events(truth)
    prompts = generated_prompts(options.generated) if options.generated.is_dir() else {}
    if not prompts:
        return ClipTexts(texts=events, source=EVENT_CLASSES)
    source = GENERATED_PROMPTS + (f", else {EVENT_CLASSES}" if events.keys() - prompts.keys() else "")
    return ClipTexts(texts=events | prompts, source=source)


class TextScorer:
    """An audio model with a text side (``embed_text``), and how each clip is scored."""

    def __init__(self, *, metric: str, model: AudioEncoder, record: dict[str, Any],
                 device: torch.device, source: str):
        self.metric = metric
        self.model = model.to(device)
        self.record = record
        self.device = device
        self.source = source
        self.sample_rate = int(model.sample_rate)
        self._texts: dict[str, np.ndarray] = {}

    @property
    def key(self) -> str:
        """The feature cache's key of the audio model's embeddings."""
        return model_key(self.record, sample_rate=self.sample_rate, channels=1,
                         features="audio-text embeddings")

    def text_direction(self, text: str) -> np.ndarray:
        """The L2-normalised embedding of ``text`` (each text embedded once)."""
        if text not in self._texts:
            embedded = self.model.embed_text([text])
            self._texts[text] = direction(embedded.float().cpu().numpy())
        return self._texts[text]

    @torch.inference_mode()
    def clip_cosines(self, audio: PairAudio, text: str, store: FeatureStore) -> dict[str, float]:
        """Each side's cosine with ``text``."""
        return side_cosines(audio, audio.get(self.sample_rate), self.text_direction(text),
                            store=store, key=self.key, model=self.model, device=self.device)

    values = staticmethod(mean_cosines)  # (generated, reference) mean cosines

    def settings(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "text": self.source, "pooling": POOLING}


def build_text_scorer(metric: Metric, recipe: Recipe | None, registry: Registry,
                      device: torch.device, options: Options, source: str) -> TextScorer | str:
    """The :class:`TextScorer` of an audio-text metric, or the sentence saying why it is
    skipped; the model is chosen as :func:`v2a.evaluate.frames.encoder_choice` chooses it."""
    plugin = metric.plugin[1]
    choice = encoder_choice(plugin, registry, recipe, options).choice
    model = build_frozen(choice)
    if not callable(getattr(model, "embed_text", None)):
        return (f"{metric.label} skipped: the audio encoder {plugin!r} has no text side "
                "(an embed_text method), so it cannot embed the clips' texts")
    return TextScorer(metric=metric.name, model=model, record=model_record(choice.as_data()),
                      device=device, source=source)


def build_text_scorers(metrics: list[Metric], recipe: Recipe | None, registry: Registry,
                       device: torch.device, skipped: dict[str, str], options: Options,
                       source: str) -> dict[str, TextScorer]:
    """Metric name → :class:`TextScorer` for the running audio-text ``metrics``; those that
    cannot run go into ``skipped``."""
    return build_scorers(metrics, TEXT_AUDIO, skipped, lambda metric: build_text_scorer(
        metric, recipe, registry, device, options, source))
