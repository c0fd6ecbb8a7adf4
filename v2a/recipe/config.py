"""What a loaded recipe is: the section schemas, the component slots, :class:`ComponentChoice`
(a slot's plug-in and validated config), :class:`Recipe`, and how a recipe's components are
built (:func:`build_frozen`) or turned into their untrained twins (:func:`untrained`).

Nothing here reads a file or validates anything: :mod:`v2a.recipe.load` makes these objects.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from v2a.errors import RecipeError
from v2a.registry import Registry, default_registry
from v2a.schema import FieldError, bounded, check_bounds, to_data
from v2a.weights import NONE

if TYPE_CHECKING:
    from v2a.interfaces import Component

# ---------------------------------------------------------------------------------------------
# Section schemas (the parts of a recipe that are not plug-ins)
# ---------------------------------------------------------------------------------------------

Precision = Literal["fp32", "bf16", "fp16"]
#: What ``training.export_dtype`` may name: the dtype the exported weights are stored in.
ExportDtype = Literal["float32", "bfloat16", "float16"]


@dataclass
class DataConfig:
    """Where clips come from (read by ``v2a extract`` and ``v2a train``)."""

    manifest: str | None = None  # CSV/JSONL of clips: path, start, duration[, label, split]
    root: str | None = None  # folder the manifest's paths are relative to
    cache: str | None = None  # feature cache folder written by `v2a extract`
    clip_seconds: float = bounded(10.0, low=0, low_open=True)  # training window
    num_workers: int = bounded(2, low=0)

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass
class TrainingConfig:
    """Optimisation (read by ``v2a train``). Defaults follow the notes; *assumed* ones say so."""

    steps: int = bounded(100_000, low=1)
    batch_size: int = bounded(32, low=1)
    grad_accum: int = bounded(1, low=1)
    lr: float = bounded(1e-4, low=0, low_open=True)  # assumed
    weight_decay: float = bounded(1e-5, low=0)  # assumed
    warmup_steps: int = bounded(1000, low=0)
    grad_clip: float = bounded(1.0, low=0)  # assumed; 0 disables clipping
    ema: float = bounded(0.999, low=0, high=1, high_open=True)  # assumed; 0 disables EMA weights
    precision: Precision = "fp32"
    level_policy: Literal["per_level", "joint"] = "per_level"  # assumed: per_level
    condition_dropout: float = bounded(0.1, low=0, high=1)  # assumed; for classifier-free guidance
    video_dropout: float = bounded(0.1, low=0, high=1)  # assumed; a row loses its video only
    text_dropout: float = bounded(0.1, low=0, high=1)  # assumed; a row loses its text only
    aux_regression_weight: float = bounded(0.1, low=0)  # assumed
    aux_contrastive_weight: float = bounded(0.1, low=0)  # assumed
    seed: int = 0
    out_dir: str = "runs"
    checkpoint_every: int = bounded(1000, low=1)
    keep_checkpoints: int = bounded(2, low=1)  # the newest checkpoints kept; older ones are removed
    log_every: int = bounded(50, low=1)
    task: str = "generator"  # what `v2a train` trains: the name of a registered training task
    lr_min: float = bounded(0.0, low=0)  # the cosine decay ends at this learning rate
    train_split: str = "train"  # manifest split trained on
    val_split: str = "val"  # manifest split of the validation loss and the logged samples
    eval_every: int = bounded(1000, low=0)  # steps between validation losses; 0 = never
    sample_every: int = bounded(5000, low=0)  # steps between TensorBoard audio samples; 0 = never
    num_sample_videos: int = bounded(4, low=0)  # fixed validation clips whose audio is logged
    compile: bool = False  # torch.compile the repeated layers of the task (compile_layers)
    # dtype of the exported weights (checkpoints stay as trained); bfloat16 halves them
    export_dtype: ExportDtype = "float32"

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.lr_min > self.lr:
            raise FieldError("lr_min",
                             f"must not exceed training.lr ({self.lr:g}), got {self.lr_min:g}")


@dataclass
class SamplingConfig:
    """Iterative masked decoding (read by ``v2a generate``)."""

    # per RVQ level; the last count repeats for further levels (v2a.sampler.level_steps)
    steps: list[int] = bounded(default_factory=lambda: [16, 8, 4, 2, 1], low=1, non_empty=True)
    temperature: float = bounded(1.0, low=0)  # initial; annealed to 0 over the steps if anneal
    anneal_temperature: bool = True
    top_k: int | None = bounded(None, low=1)
    top_p: float | None = bounded(None, low=0, high=1, low_open=True)
    cfg_scale: float = bounded(3.0, low=0)  # assumed; 0 = unconditional, 1 = conditional only
    candidates: int = bounded(1, low=1)  # B candidates, reranked by the recipe's reranker
    seed: int = 0
    precision: Precision = "fp32"
    compile: bool = False  # torch.compile the generator's repeated layers

    def __post_init__(self) -> None:
        check_bounds(self)


SECTIONS: dict[str, type] = {"data": DataConfig, "training": TrainingConfig, "sampling": SamplingConfig}
#: Component slots holding one component, and the kind of plug-in each takes.
SLOTS: dict[str, str] = {
    "codec": "codec",
    "audio_encoder": "audio_encoder",
    "fuser": "fuser",
    "generator": "generator",
    "reranker": "reranker",
    "text_encoder": "text_encoder",  # optional: prompts, fused with the video by the fuser
}
#: Slots holding a mapping of named streams, each a component of the kind given.
MULTI_SLOTS: dict[str, str] = {"visual_encoders": "visual_encoder"}
#: Keys of a recipe file that are about the file itself: never inherited through ``extends``.
OWN_KEYS = ("name", "description", "base")
META_KEYS = (*OWN_KEYS, "extends")
TOP_KEYS = (*META_KEYS, *SLOTS, *MULTI_SLOTS, *SECTIONS)
COMMAND_LINE = "command line"
#: The slots a recipe needs to generate; a base recipe usually lacks them.
MODEL_SLOTS = ("fuser", "generator")


@dataclass
class ComponentChoice:
    """A slot's plug-in, its validated config, the options as written, the components nested in
    its options (fields declared with :func:`v2a.registry.component_option`) and the properties
    the plug-in declares for that config (:attr:`v2a.registry.ComponentSpec.properties`)."""

    kind: str
    plugin: str
    options: dict[str, Any]
    config: Any
    nested: dict[str, ComponentChoice] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)

    def as_data(self) -> dict[str, Any]:
        """The slot as plain data with every default filled in."""
        data = to_data(self.config) if self.config is not None else {}
        data.update({name: choice.as_data() for name, choice in self.nested.items()})
        return {"plugin": self.plugin, **data}

    def effective_data(self) -> dict[str, Any]:
        """What interpolations see of the slot: :meth:`as_data` (nested components included)
        with the declared properties over it."""
        data = self.as_data()
        data.update({name: choice.effective_data() for name, choice in self.nested.items()})
        data.update(self.properties)
        return data


#: The seed every frozen component is built from (see :func:`build_frozen`).
BUILD_SEED = 0


def build_frozen(choice: ComponentChoice, registry: Registry | None = None) -> Component:
    """Build a recipe's component for inference: in eval mode, without gradients, and from a
    fixed seed (:data:`BUILD_SEED`, the caller's random state untouched), so that a randomly
    initialised component (``weights: none``) is the same network in every process and every
    run, as the feature cache's key assumes."""
    import torch  # loading and checking a recipe needs no torch; building a component does
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILD_SEED)
        component = (registry or default_registry()).build(choice.kind, choice.plugin, choice.config)
    return component.eval().requires_grad_(False)


@dataclass
class Recipe:
    """A loaded, composed and validated recipe.

    ``base``: the file says ``base: true`` (meant to be extended, not run; see
    :func:`require_runnable`). ``overrides``: the ``key=value`` texts it was loaded with, as
    given, so that a hint can repeat the user's command. ``path``: the recipe file.
    """

    source: str
    name: str
    description: str
    components: dict[str, ComponentChoice]  # "codec", "visual_encoders.clip", ...
    data: DataConfig
    training: TrainingConfig
    sampling: SamplingConfig
    base: bool = False
    overrides: tuple[str, ...] = ()
    path: Path | None = None

    @property
    def visual_streams(self) -> list[str]:
        """Names of the visual encoder streams, in recipe order."""
        prefix = "visual_encoders."
        return [slot[len(prefix):] for slot in self.components if slot.startswith(prefix)]

    def all_components(self) -> list[tuple[str, ComponentChoice]]:
        """``(slot, choice)`` of every component, nested ones included (``reranker.audio_encoder``)."""
        found = []

        def walk(slot: str, choice: ComponentChoice) -> None:
            found.append((slot, choice))
            for name, inner in choice.nested.items():
                walk(f"{slot}.{name}", inner)

        for slot, choice in self.components.items():
            walk(slot, choice)
        return found

    def has(self, slot: str) -> bool:
        return slot in self.components

    def choice(self, slot: str) -> ComponentChoice:
        if slot not in self.components:
            raise RecipeError(f"{self.source}: the recipe has no {slot}, which this command needs")
        return self.components[slot]

    def build(self, slot: str, registry: Registry | None = None) -> Component:
        """Build the component in ``slot`` (``"codec"``, ``"visual_encoders.clip"``, ...)."""
        choice = self.choice(slot)
        return (registry or default_registry()).build(choice.kind, choice.plugin, choice.config)

    def command_line(self, command: str, *options: str) -> str:
        """``v2a <command> <recipe> <the user's overrides> <options>``, quoted for a shell: the
        command a hint tells the user to run, repeating what they gave."""
        return "v2a " + shlex.join([command, str(self.source), *self.overrides, *options])

    def as_data(self) -> dict[str, Any]:
        """The resolved recipe with every default filled in (what ``v2a recipe show`` prints)."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.base:
            out["base"] = True
        for slot in SLOTS:
            if slot in self.components:
                out[slot] = self.components[slot].as_data()
        streams = {s: self.components[f"visual_encoders.{s}"].as_data() for s in self.visual_streams}
        if streams:
            out["visual_encoders"] = streams
        for section in SECTIONS:
            out[section] = to_data(getattr(self, section))
        return out

    def to_yaml(self) -> str:
        return yaml.dump(self.as_data(), Dumper=RecipeDumper, sort_keys=False)


class RecipeDumper(yaml.SafeDumper):
    """Block-style mappings; lists of scalars on one line (``steps: [16, 8, 4]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


RecipeDumper.add_representer(list, _represent_list)


# ---------------------------------------------------------------------------------------------
# The same architecture without trained weights (sized and compared on the meta device)
# ---------------------------------------------------------------------------------------------


def _has_weights(config: Any) -> bool:
    return config is not None and any(f.name == "weights" for f in dataclasses.fields(config))


def _options(choice: ComponentChoice) -> dict[str, Any]:
    """A nested component as the options its owner builds it from, with random weights."""
    out = {"plugin": choice.plugin, **choice.options}
    if _has_weights(choice.config):
        out["weights"] = NONE
    out.update({name: _options(inner) for name, inner in choice.nested.items()})
    return out


def untrained(choice: ComponentChoice) -> ComponentChoice:
    """``choice`` with ``weights: none`` for it and every component nested in it: the same
    architecture, built without reading or downloading anything."""
    if choice.config is None:
        return choice
    changes: dict[str, Any] = {name: _options(inner) for name, inner in choice.nested.items()}
    if _has_weights(choice.config):
        changes["weights"] = NONE
    if not changes:
        return choice
    return dataclasses.replace(choice, config=dataclasses.replace(choice.config, **changes))


def untrained_recipe(recipe: Recipe) -> Recipe:
    """``recipe`` with :func:`untrained` applied to every slot."""
    return dataclasses.replace(
        recipe, components={slot: untrained(c) for slot, c in recipe.components.items()}
    )
