"""The model card of a model folder: ``README.md`` with the Hub's YAML front matter (licence,
``library_name: v2a``, tags, datasets), then what the model is, its recipe, how it was trained,
its scores, its licence and how to use it.

The card is made from facts only (:class:`ModelFacts`): the same run and scores give the same
card, byte for byte (no dates, no paths of the machine that exported it but the recipe's own).
The Hub has no ``pipeline_tag`` for video-to-audio (its task list has text-to-audio and
audio-to-audio, nothing that takes a video and gives sound), so the card sets none and says
``video-to-audio`` in its tags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from v2a.evaluate.report import markdown_table
from v2a.recipe import RecipeDumper

#: The sections of recipe data the card's "Recipe" block leaves out (the run's data and
#: training options; recipe.yaml keeps them).
TRAINING_SECTIONS = ("data", "training")
#: The licence the card states when the exporter names none (the Hub's word for "see the card").
NO_LICENCE = "other"


@dataclass(frozen=True, kw_only=True)
class TrainingFacts:
    """How a run was trained: its task, the manifest and clips, the steps it reached (None
    without a checkpoint) and those its recipe asked for, and a few options."""

    task: str
    manifest: str
    clips: int | None
    steps: int | None
    planned_steps: int
    batch_size: int
    clips_consumed: int | None
    precision: str
    ema: float
    recipe_source: str


@dataclass(frozen=True, kw_only=True)
class ModelFacts:
    """Everything the card says: the model's name and description, its recipe data (as written
    to ``recipe.yaml``), its weights files (:class:`v2a.export.folder.ExportedWeights`), the
    licence (an SPDX identifier, or None), Hub dataset ids, the training facts and the
    ``v2a evaluate`` results (or None)."""

    name: str
    description: str
    recipe: Mapping[str, Any]
    weights: Sequence[Any]
    licence: str | None
    datasets: Sequence[str] = ()
    training: TrainingFacts | None = None
    scores: Mapping[str, Any] | None = None


def front_matter(facts: ModelFacts) -> str:
    """The card's YAML front matter, between ``---`` lines."""
    plugins = sorted({str(v["plugin"]) for v in _components(facts.recipe).values()})
    meta: dict[str, Any] = {
        "license": (facts.licence or NO_LICENCE).lower(),
        "library_name": "v2a",
        "tags": ["v2a", "video-to-audio", *plugins],
    }
    if facts.datasets:
        meta["datasets"] = list(facts.datasets)
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _components(data: Mapping[str, Any], prefix: str = "") -> dict[str, Mapping[str, Any]]:
    """Every component of recipe data (a mapping with a ``plugin``) by its slot."""
    found: dict[str, Mapping[str, Any]] = {}
    for key, value in data.items():
        if not isinstance(value, Mapping) or key in TRAINING_SECTIONS:
            continue
        slot = f"{prefix}{key}"
        if "plugin" in value:
            found[slot] = value
        inner = _components(value, f"{slot}.")
        found.update(inner)
    return found


def _size(count: int) -> str:
    return f"{count / 1e6:.2f} M" if count >= 100_000 else f"{count:,}"


def _bytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


def components_table(facts: ModelFacts) -> str:
    """One row per component: slot, plug-in, parameters and the weights it loads."""
    files = {w.slot: w for w in facts.weights}
    rows = ["| slot | plug-in | parameters | weights |", "|---|---|---|---|"]
    for slot, value in _components(facts.recipe).items():
        held = files.get(slot)
        if held is not None:
            count = _size(held.parameters) if held.parameters is not None else "?"
            weights = f"`{held.name}` ({_bytes(held.bytes)})"
        else:
            count = ""
            given = value.get("weights")
            weights = ("none needed" if given is None else
                       "random (none)" if str(given).lower() == "none" else
                       "its library's published weights (pretrained)"
                       if str(given).lower() == "pretrained" else f"`{given}`")
        rows.append(f"| {slot} | {value['plugin']} | {count} | {weights} |")
    return "\n".join(rows)


def training_text(training: TrainingFacts | None) -> str:
    if training is None:
        return "Not recorded.\n"
    clips = (f"{training.clips} training clips" if training.clips is not None
             else "the number of clips is not recorded (the run keeps no checkpoint)")
    if training.steps is not None:
        steps = f"{training.steps} steps of the {training.planned_steps} its recipe asks for"
    else:
        steps = (f"its recipe asks for {training.planned_steps} steps (the run keeps no "
                 f"checkpoint to say how many it took)")
    seen = (f", {training.clips_consumed} clips seen in all" if training.clips_consumed else "")
    manifest = f"`{training.manifest}`" if training.manifest else "no manifest named"
    return (f"Trained by `v2a train` (task `{training.task}`, recipe `{training.recipe_source}`) "
            f"on the clips of {manifest}: {clips}; {steps}, batches of {training.batch_size}"
            f"{seen}, {training.precision} precision, EMA {training.ema:g}. The recipe's `data` "
            f"and `training` sections, in `recipe.yaml`, give every option.\n")


def scores_text(scores: Mapping[str, Any] | None) -> str:
    if scores is None:
        return ("Not given at export (`v2a export RUN -o DIR --scores EVAL_DIR` puts the "
                "results of `v2a evaluate` here).\n")
    command = scores.get("command")
    made = f"Made by `{command}`; " if command else ""
    return (f"{made}`results.json` holds every number and each clip's.\n\n"
            + markdown_table(dict(scores)).rstrip() + "\n")


def licence_text(licence: str | None) -> str:
    if licence is None:
        return ("Not stated by whoever exported it (`--licence SPDX` sets it); ask them before "
                "you reuse the weights.\n")
    return (f"`{licence}` (SPDX). The licences of the libraries and of any pre-trained weights "
            f"that the recipe's components download are their own.\n")


def usage_text(name: str) -> str:
    return f"""With v2a installed, from the Hub (OWNER/NAME: the repository
holding this folder):

```sh
v2a generate --recipe hf://OWNER/NAME video.mp4 -o out/
v2a generate --recipe hf://OWNER/NAME@COMMIT video.mp4 -o out/   # pinned to one revision
```

or from this folder, wherever it is:

```sh
v2a generate --recipe path/to/{name} video.mp4 -o out/
```

Each weights file is pinned by its SHA-256 in `recipe.yaml`: a file whose content differs is
refused before anything is loaded. `v2a recipe show hf://OWNER/NAME` prints the recipe.
"""


def model_card(facts: ModelFacts) -> str:
    """The whole ``README.md``."""
    model = {k: v for k, v in facts.recipe.items() if k not in TRAINING_SECTIONS}
    total = sum(w.parameters or 0 for w in {w.name: w for w in facts.weights}.values())
    description = f"{facts.description}\n\n" if facts.description else ""
    return "\n".join([
        front_matter(facts),
        f"# {facts.name}\n",
        description + "A video-to-audio model for v2a: it gives "
        "sound to a video, in sync with what happens in it. Exported by `v2a export` from a "
        "training run.\n",
        "## What it is\n",
        components_table(facts) + "\n",
        f"{_size(total)} parameters in the weights files of this folder.\n",
        "## Recipe\n",
        "`recipe.yaml` is the resolved recipe of the run, every default filled in. Its model "
        "and sampling sections:\n",
        "```yaml\n" + yaml.dump(model, Dumper=RecipeDumper, sort_keys=False) + "```\n",
        "## Training\n",
        training_text(facts.training),
        "## Scores\n",
        scores_text(facts.scores),
        "## Licence\n",
        licence_text(facts.licence),
        "## How to use it\n",
        usage_text(facts.name),
    ])
