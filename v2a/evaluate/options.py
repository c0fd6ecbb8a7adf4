"""What ``v2a evaluate`` is asked to do (:class:`Options`), the checks on it, and its errors."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from v2a.errors import UserError
from v2a.metrics.onsets import DEFAULT_TOLERANCE

DEFAULT_ENCODERS = "mel,mfcc,codec_latents"


class EvaluationError(UserError):
    """Inputs ``v2a evaluate`` cannot use (one sentence)."""


class EvaluationOptionError(EvaluationError):
    """A bad option of ``v2a evaluate``."""

    exit_code = 2


@dataclass
class Options:
    """What to evaluate and how (the command's options)."""

    generated: Path
    reference: Path | None = None  # None: reference-free (only the metrics that need none)
    videos: Path | None = None  # None: the reference folder, else the generated folder
    events: Path | None = None  # None: REF/events.jsonl when it exists
    recipe: str | None = None
    checkpoint: Path | None = None
    overrides: list[str] = field(default_factory=list)
    recipe_options: dict = field(default_factory=dict)  # load_recipe's flags (v2a.recipe.recipe_options)
    encoders: list[str] = field(default_factory=lambda: DEFAULT_ENCODERS.split(","))
    tolerance: float = DEFAULT_TOLERANCE
    plots: Path | None = None  # the folder to write one PNG per clip into
    device: str = "cpu"
    metrics: list[str] | None = None  # --metrics names; None: today's set (--encoders, ...)
    protocol: str | None = None  # --protocol: its metrics, laid out as its paper's table
    features: Path | None = None  # the feature cache's folder (OUT/features); None: no cache
    models: dict[str, dict] = field(default_factory=dict)  # --model PLUGIN.KEY=VALUE, by plug-in
    captions: Path | None = None  # --captions: a CSV/TSV of clip name and text (the CLAP score)


def check_options(options: Options) -> None:
    """An :class:`EvaluationOptionError` for options that cannot go together or cannot work."""
    if not 0 < options.tolerance < 1:
        raise EvaluationOptionError(f"--tolerance is in seconds, between 0 and 1, got "
                                    f"{options.tolerance:g}")
    if options.checkpoint is not None and options.recipe is None:
        raise EvaluationOptionError("--checkpoint needs the --recipe it was trained with")
    if options.overrides and options.recipe is None:
        raise EvaluationOptionError(f"recipe overrides ({options.overrides[0]}) need --recipe")
    if options.checkpoint is not None and not options.checkpoint.is_dir():
        raise EvaluationOptionError(f"the checkpoint {options.checkpoint} is not a training run folder")
    if options.metrics is not None and options.protocol is not None:
        raise EvaluationOptionError("give --metrics or --protocol, not both")
    if options.plots is not None and options.reference is None:
        raise EvaluationOptionError("--plots draws the generated audio above its reference, so it "
                                    "needs --reference")
    if options.plots is not None and importlib.util.find_spec("matplotlib") is None:
        raise EvaluationOptionError("--plots needs matplotlib, which is not installed; install it "
                                    "with: pip install 'v2a[plots]'")
