"""Models to share: a training run folder exported as a self-contained model folder (weights,
``recipe.yaml``, a model card), checked, and pushed to the Hugging Face Hub.

* :mod:`~v2a.export.card`: the model card (``README.md``) from the facts of a run;
* :mod:`~v2a.export.folder`: :func:`export_run` (``v2a export``) and
  :func:`check_model_folder` (what ``v2a push`` checks first);
* :mod:`~v2a.export.push`: :func:`push_folder` (``v2a push``), through ``huggingface_hub``.
"""

from __future__ import annotations

from v2a.export.card import ModelFacts, TrainingFacts, model_card
from v2a.export.folder import (
    CARD_FILE,
    RECIPE_FILE,
    SCORES_FILE,
    ExportedWeights,
    ExportError,
    ExportResult,
    check_model_folder,
    export_run,
    scores_file,
)

__all__ = [
    "CARD_FILE",
    "RECIPE_FILE",
    "SCORES_FILE",
    "ExportError",
    "ExportResult",
    "ExportedWeights",
    "ModelFacts",
    "TrainingFacts",
    "check_model_folder",
    "export_run",
    "model_card",
    "scores_file",
]
