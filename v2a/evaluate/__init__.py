"""Evaluation: ``v2a evaluate GENERATED [--reference REF]`` scores generated audio, against
references or (reference-free) on its own.

Each job has its module:

* :mod:`v2a.evaluate.options` — :class:`Options` (what to evaluate), their checks, the errors;
* :mod:`v2a.evaluate.catalogue` — every metric by name (what it needs, its model, direction,
  unit) and the protocols; :mod:`v2a.evaluate.selection` — which of them an evaluation runs
  and which it lists as skipped, with why;
* :mod:`v2a.evaluate.pairing` — generated files paired with references by stem, both sides
  decoded at the rates the metrics need and cut to their common length;
* :mod:`v2a.evaluate.frames` — the audio encoders of the Fréchet distances and each side's frame
  statistics;
* :mod:`v2a.evaluate.benchmark` — the synthetic benchmark against ``v2a synth``'s events;
  :mod:`v2a.evaluate.text_classes` — its classes without timing (against the clips' texts,
  and each class's share);
* :mod:`v2a.evaluate.sync` — the recipe reranker's sync score against the videos;
* :mod:`v2a.evaluate.classify` — KL and IS of an AudioClassifier's probabilities;
  :mod:`v2a.evaluate.against_reference` — NS and onset accuracy / AP against the reference;
  :mod:`v2a.evaluate.offsets` — DeSync / SS from a SyncClassifier;
* :mod:`v2a.evaluate.store` — the feature cache (each model's features of each file, once);
  :mod:`v2a.evaluate.provenance` — what computed each number, and whether two results compare;
  :mod:`v2a.evaluate.records` — the results' ``metrics`` entries;
* :mod:`v2a.evaluate.engine` — :func:`evaluate`: the steps above, pair by pair;
* :mod:`v2a.evaluate.report` — the markdown table and ``results.json``;
* :mod:`v2a.evaluate.plots` — one spectrogram plot per clip.

The metrics themselves are :mod:`v2a.metrics`'s. Metrics (one table row each, and JSON):

* **Fréchet distance** (:func:`v2a.metrics.frechet.frechet_distance`) between the per-frame
  feature distributions of the generated and the reference set, every frame of every clip
  pooled, for each audio encoder asked for: ``mel`` (log-mel frames: FDM), ``mfcc``
  (:func:`v2a.metrics.spectral.mfcc` of the same frames) and ``codec_latents`` of the recipe's
  codec (FDD), or any registered :class:`~v2a.interfaces.AudioEncoder`. The statistics stream
  (:class:`~v2a.metrics.frechet.Moments`), so any number of clips fits in memory. Few frames
  bias the distance upwards: the counts are reported.
* **Synthetic benchmark** (``v2a synth``'s ground-truth events): onset F1 within ±tolerance,
  mean absolute onset offset and class accuracy, for the generated set, for the reference audio
  and (with a recipe) for the reference passed through the recipe's codec, the ceiling of a model
  that generates that codec's codes. Scored at 16 kHz by :mod:`v2a.metrics.onsets`.
* **Sync score**: the recipe's reranker (any registered :class:`~v2a.interfaces.Reranker`, e.g.
  a pre-trained synchronisation model) scores each clip's audio against its video; mean over the
  clips, higher is better.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from v2a.lazy import home_of, lazy_exports

from v2a.evaluate.options import DEFAULT_ENCODERS, EvaluationError, EvaluationOptionError, Options

#: The names of the modules that import torch, imported on first use (PEP 562 ``__getattr__``)
#: so that ``v2a evaluate --help`` (the catalogue and the options) costs no torch import.
_HOMES = {
    "v2a.evaluate.engine": ("evaluate",),
    "v2a.evaluate.provenance": ("check_comparable", "differences"),
    "v2a.evaluate.report": ("markdown_table", "results_json"),
}
_HOME_OF = home_of(_HOMES)


if TYPE_CHECKING:  # the same names, for type checkers (tests/test_startup.py keeps them equal)
    from v2a.evaluate.engine import evaluate
    from v2a.evaluate.provenance import check_comparable, differences
    from v2a.evaluate.report import markdown_table, results_json

__all__ = ["DEFAULT_ENCODERS", "EvaluationError", "EvaluationOptionError", "Options",
           "check_comparable", "differences", "evaluate", "markdown_table", "results_json"]

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
