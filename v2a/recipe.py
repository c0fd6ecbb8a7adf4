"""Recipes: YAML files that name a plug-in and its options for every slot of the pipeline.

A recipe looks like::

    extends: base.yaml                 # optional: one file or a list, merged first
    name: my_experiment
    codec: {plugin: dac, model: 44khz, n_codebooks: 9}
    visual_encoders:                   # named streams, each a component
      clip: components/visual_encoders/clip_b32.yaml   # a component YAML, relative to this file
      s3d: {plugin: s3d, fps: 25}
    audio_encoder: {plugin: mel}
    fuser: {plugin: ..., ...}
    generator: {plugin: ..., n_codebooks: "${codec.n_codebooks}"}
    reranker: none                     # a plug-in name alone: its defaults
    data: {...}
    training: {...}
    sampling: {...}

Composition rules: files named by ``extends`` are merged in order, then the file itself; a
component slot merges key by key unless the newer layer names a different ``plugin``, in which
case the slot is replaced (options of one plug-in never leak into another). ``key=value``
overrides from the command line are applied last, with the same rules (``codec=encodec`` swaps
the codec, ``codec.n_codebooks=4`` sets one option, ``visual_encoders.s3d=null`` drops a
stream). Values are parsed as YAML. ``name``, ``description`` and ``base: true`` (a recipe
meant to be extended, not run) belong to their file and are never inherited.

Interpolations (``${codec.n_codebooks}``, :mod:`v2a.interpolation`) are resolved after
composition, against each slot's *effective* options: the options as written, the plug-in's
defaults, and the properties the plug-in declares its component will have
(:attr:`v2a.registry.ComponentSpec.properties`; they win over an option of the same name). So
each slot and section is validated as soon as what it refers to is, and then seen by the
others in full; a slot swapped for another plug-in still gives ``${codec.n_codebooks}`` when
the new plug-in declares it. No interpolation reads outside the recipe (``oc.env``) unless the
caller allows it.

Validation happens before anything is built: every key, type, range and plug-in name is
checked against the section schemas below and each plug-in's config dataclass, then
:func:`v2a.recipe_checks.check_consistency` checks that the components fit together. A recipe
can only reach code through registered plug-in names; YAML is read with the safe loader, so no
tag can import or run anything, and a file or override larger or deeper than the limits
(:data:`MAX_BYTES`, :data:`MAX_VALUES` with YAML aliases counted, :data:`MAX_DEPTH`) is
refused before anything expands it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from v2a.errors import PluginError, RecipeError, UserError, closest, suggestion
from v2a.interfaces import Component
from v2a.interpolation import (
    Absent,
    Evaluator,
    InterpolationError,
    Key,
    LimitError,
    Unavailable,
    count_values,
    dotted,
    has_interpolation,
    walk,
)
from v2a.registry import COMPONENT_FIELD, ComponentSpec, Registry, default_registry
from v2a.schema import (
    FieldError,
    SchemaError,
    bounded,
    check_bounds,
    describe,
    fields_of,
    to_data,
    validate,
)
from v2a.weights import NONE

# ---------------------------------------------------------------------------------------------
# Limits on what a recipe file (or an override) may hold
# ---------------------------------------------------------------------------------------------

#: Bytes of one recipe or component file (and characters of one override or resolved string).
MAX_BYTES = 256 * 1024
#: Values (every scalar, list and mapping, YAML aliases counted as often as they are used) of
#: one file, of a whole composed recipe, and of one resolved slot or section.
MAX_VALUES = 10_000
#: Nesting of mappings and lists, and of ``extends``.
MAX_DEPTH = 32
#: Setting this environment variable to 1 allows ``${oc.env:...}`` (as ``--allow-env`` does).
ALLOW_ENV_VARIABLE = "V2A_RECIPE_ALLOW_ENV"

# ---------------------------------------------------------------------------------------------
# Section schemas (the parts of a recipe that are not plug-ins)
# ---------------------------------------------------------------------------------------------

Precision = Literal["fp32", "bf16", "fp16"]


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
    aux_regression_weight: float = bounded(0.1, low=0)  # assumed
    aux_contrastive_weight: float = bounded(0.1, low=0)  # assumed
    seed: int = 0
    out_dir: str = "runs"
    checkpoint_every: int = bounded(1000, low=1)
    keep_checkpoints: int = bounded(3, low=1)
    log_every: int = bounded(50, low=1)
    task: str = "generator"  # what `v2a train` trains: the name of a registered training task
    lr_min: float = bounded(0.0, low=0)  # the cosine decay ends at this learning rate
    train_split: str = "train"  # manifest split trained on
    val_split: str = "val"  # manifest split of the validation loss and the logged samples
    eval_every: int = bounded(1000, low=0)  # steps between validation losses; 0 = never
    sample_every: int = bounded(5000, low=0)  # steps between TensorBoard audio samples; 0 = never
    num_sample_videos: int = bounded(4, low=0)  # fixed validation clips whose audio is logged

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
# Comparing a recipe with a saved one (a training run's recipe.yaml)
# ---------------------------------------------------------------------------------------------


class _Absent:
    def __repr__(self) -> str:
        return "absent"


#: The value :func:`recipe_differences` gives a key that one side lacks (shown as ``absent``).
ABSENT: Any = _Absent()


def flat_keys(data: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"codec": {"n_codebooks": 4}}`` →
    ``{"codec.n_codebooks": 4}`` (lists and other values are leaves)."""
    out: dict[str, Any] = {}
    for key, value in (data or {}).items():
        if isinstance(value, Mapping):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def recipe_differences(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, *,
                       ignore: Sequence[str] = ()) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` wherever the recipe data ``old`` and ``new``
    (:meth:`Recipe.as_data`, or a saved copy of it) differ, keys in ``ignore`` left out: the
    ``plugin`` keys first (a swapped plug-in explains its other keys), then in key order. A key
    one side lacks has the value :data:`ABSENT` there."""
    a, b = flat_keys(old), flat_keys(new)
    differ = [k for k in a.keys() | b.keys()
              if a.get(k, ABSENT) != b.get(k, ABSENT) and k not in ignore]
    differ.sort(key=lambda k: (k.rpartition(".")[2] != "plugin", k))
    return [(k, a.get(k, ABSENT), b.get(k, ABSENT)) for k in differ]


def read_saved_recipe(path: str | Path) -> dict[str, Any] | None:
    """The data of a saved resolved recipe (what :meth:`Recipe.to_yaml` wrote), or None when the
    file is missing or unreadable. It is compared, not loaded: nothing is validated or built."""
    try:
        data = load_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------------
# Finding and reading files
# ---------------------------------------------------------------------------------------------


class YAMLLimitError(yaml.YAMLError):
    """Parsed YAML would pass a limit of this module; ``problem`` is the clause that says which,
    to follow the name of the file (or override)."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with two changes.

    * It reads ``1e-3`` as a float as YAML 1.2 does (YAML 1.1 wants a dot, ``1.0e-3``, and would
      hand ``lr: 1e-3`` to the schema as a string).
    * It counts the values of the document as the node graph is composed, an alias counted as
      often as it is used but never expanded, and refuses (:class:`YAMLLimitError`) more than
      :data:`MAX_VALUES` values or more than :data:`MAX_DEPTH` levels of nesting: an alias
      bomb or deep nesting is refused while it is read, before anything expands or recurses.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values in it, its depth)
        self.values = 0  # of the largest node so far: in the end, of the document

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YAMLLimitError(_too_deep())
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        measured = self._measured.get(id(node))
        if measured is None:
            if alias:  # an alias to a collection that is still being composed: to itself
                raise YAMLLimitError("holds a YAML alias inside the mapping or list it names; "
                                     "a recipe cannot contain itself")
            if isinstance(node, yaml.ScalarNode):
                children = []
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            else:
                children = [n for pair in node.value for n in pair]
            inner = [self._measured[id(child)] for child in children]
            measured = (1 + sum(v for v, _ in inner), 1 + max((d for _, d in inner), default=0))
            self._measured[id(node)] = measured
        values, depth = measured
        if values > MAX_VALUES:
            raise YAMLLimitError(f"expands to more than {MAX_VALUES} values (YAML aliases?); "
                                 f"recipes are limited to {MAX_VALUES}")
        if self._depth + depth > MAX_DEPTH:
            raise YAMLLimitError(_too_deep())
        self.values = max(self.values, values)
        return node


def _too_deep() -> str:
    return (f"nests mappings and lists more than {MAX_DEPTH} levels deep; recipes are limited "
            f"to {MAX_DEPTH}")


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse recipe YAML: safe (no Python objects), numbers as YAML 1.2 reads them, and within
    the limits (:class:`YAMLLimitError`: at most :data:`MAX_BYTES`, :data:`MAX_VALUES` values
    and :data:`MAX_DEPTH` levels)."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise YAMLLimitError(f"is larger than {MAX_BYTES // 1024} KiB; recipes are limited to "
                             f"{MAX_BYTES // 1024} KiB")
    loader = RecipeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def builtin_recipes_dir() -> Path:
    """Folder of the recipes shipped with v2a (``recipes/`` in the source tree)."""
    return Path(str(importlib.resources.files("v2a_recipes")))


def shipped_recipes() -> dict[str, Path]:
    """The shipped recipes by name: the path below :func:`builtin_recipes_dir` without
    ``.yaml`` (``tiny``, ``small/maskvat_hybrid_small``); ``components/`` holds component
    files, not recipes."""
    root = builtin_recipes_dir()
    found = {}
    for path in sorted(root.rglob("*.yaml")):
        parts = path.relative_to(root).with_suffix("").parts
        if "components" not in parts:
            found["/".join(parts)] = path
    return found


def builtin_recipe_names() -> list[str]:
    return list(shipped_recipes())


def display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def locate(ref: str | Path, relative_to: Path | None = None) -> Path:
    """A recipe file from a path, from the name of a shipped recipe (``tiny``,
    ``small/maskvat_small``) or from the file name of one, when only one has it
    (``maskvat_hybrid_small``)."""
    ref = str(ref)
    candidates = []
    if relative_to is not None:
        candidates.append(relative_to / ref)
    candidates.append(Path(ref))
    builtin = builtin_recipes_dir()
    candidates += [builtin / ref, builtin / f"{ref}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shipped = shipped_recipes()
    if not re.search(r"[/\\]", ref):
        stem = re.sub(r"\.ya?ml$", "", ref)
        named = [name for name, path in shipped.items() if path.stem == stem]
        if len(named) == 1:
            return shipped[named[0]]
        if named:
            listed = " and ".join(display(shipped[n]) for n in named)
            raise RecipeError(f"recipe name {ref!r} is ambiguous: {listed} both have it; give "
                              "the path of the one you mean")
    where = f" (looked beside {display(relative_to)})" if relative_to is not None else ""
    choices = [*shipped, *(p.stem for p in shipped.values())]
    raise RecipeError(
        f"recipe file {ref!r} does not exist{where}; "
        f"{suggestion(Path(ref).stem, choices, 'built-in recipes')}"
    )


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a recipe (or component) file holds, within the limits of :func:`load_yaml`."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise RecipeError(f"{display(path)} is larger than {MAX_BYTES // 1024} KiB; recipes "
                              f"are limited to {MAX_BYTES // 1024} KiB")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {display(path)}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{display(path)} is not UTF-8 text") from None
    try:
        data = load_yaml(text)
    except YAMLLimitError as exc:
        raise RecipeError(f"{display(path)} {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise RecipeError(f"{display(path)} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{display(path)} must hold a mapping of keys, not {type(data).__name__}")
    return data


@dataclass(frozen=True)
class CatalogueEntry:
    """A shipped recipe as ``v2a recipe list`` shows it."""

    name: str
    path: Path
    description: str
    base: bool


def catalogue() -> list[CatalogueEntry]:
    """Every shipped recipe with its own description and ``base`` flag (read from its file
    alone: neither is inherited)."""
    entries = []
    for name, path in shipped_recipes().items():
        try:
            data = read_yaml(path)
            description, base = str(data.get("description") or ""), data.get("base") is True
        except RecipeError as exc:
            description, base = f"(cannot be read: {exc})", False
        entries.append(CatalogueEntry(name=name, path=path, description=description, base=base))
    return entries


def recipes_extending(path: Path) -> list[str]:
    """The recipes that name ``path`` in their ``extends`` (shipped ones by name, others in
    ``path``'s folder by file), for a hint."""
    target = path.resolve()
    shipped = shipped_recipes()
    stems = [p.stem for p in shipped.values()]
    names = {p.resolve(): p.stem if stems.count(p.stem) == 1 else name
             for name, p in shipped.items()}
    found = []
    for candidate in sorted({*shipped.values(), *path.parent.glob("*.yaml")}):
        try:
            bases = read_yaml(candidate).get("extends") or []
            bases = [bases] if isinstance(bases, str) else list(bases)
            if any(locate(b, candidate.parent).resolve() == target
                   for b in bases if isinstance(b, str)):
                found.append(names.get(candidate.resolve(), display(candidate)))
        except RecipeError:
            continue
    return sorted(set(found))


# ---------------------------------------------------------------------------------------------
# Composition with provenance (which file set which key)
# ---------------------------------------------------------------------------------------------


def slot_kind(path: str) -> str | None:
    """The plug-in kind of a component slot path (``codec``, ``visual_encoders.clip``)."""
    if path in SLOTS:
        return SLOTS[path]
    head, _, tail = path.partition(".")
    if head in MULTI_SLOTS and tail and "." not in tail:
        return MULTI_SLOTS[head]
    return None


def resolve_relative_weights(data: Any, base_dir: Path) -> Any:
    """``data`` with every ``weights`` value that starts with ``./`` or ``../`` made absolute
    against ``base_dir`` (the folder of the file that sets it), at any depth, so that a recipe
    can ship with its weights files; other values are left as they are."""
    if isinstance(data, Mapping):
        return {
            k: str((base_dir / v).resolve())
            if k == "weights" and isinstance(v, str) and v.startswith(("./", "../"))
            else resolve_relative_weights(v, base_dir)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [resolve_relative_weights(v, base_dir) for v in data]
    return data


def is_override(arg: str) -> bool:
    """Whether a command-line argument is a recipe override (``key=value`` or ``~key``) rather
    than a file that happens to hold such characters (an existing path is always a file)."""
    return ("=" in arg or arg.startswith("~")) and not arg.startswith("-") and not Path(arg).exists()


def override_source(text: str) -> str:
    """How errors name a ``key=value`` override (long ones shortened)."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    return f"{COMMAND_LINE} ({shown})"


class Composer:
    """Merges recipe layers into plain data, remembering the source of every key."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sources: dict[str, str] = {}  # dotted key -> the file (or override) that set it
        self._children: dict[str, set[str]] = {}  # dotted key -> the keys of sources below it
        self.values = 0  # read so far, over every file and override: at most MAX_VALUES

    def source_of(self, path: str, *, latest_below: bool = False) -> str:
        """Who set ``path`` (or its closest parent); with ``latest_below``, whoever set a key at
        or below ``path`` last (for errors about a mapping as a whole)."""
        if latest_below:
            below = [k for k in self.sources if k == path or k.startswith(path + ".")]
            if below:  # dicts keep insertion order and _mark re-inserts: the last is the latest
                return self.sources[below[-1]]
        while path:
            if path in self.sources:
                return self.sources[path]
            item = re.fullmatch(r"(.+)\[\d+\]", path)  # a list item: whoever set the list
            path = item.group(1) if item else path.rpartition(".")[0]
        return self.sources.get("", "recipe")

    def _mark(self, path: str, value: Any, source: str, parent: str = "") -> None:
        """Record ``source`` as the setter of ``path`` (a key of the mapping at ``parent``) and
        of everything in ``value``, forgetting who set what was there before."""
        self._forget(path)
        self.sources[path] = source
        self._children.setdefault(parent, set()).add(path)
        if isinstance(value, Mapping):
            for k, v in value.items():
                self._mark(f"{path}.{k}", v, source, path)

    def _forget(self, path: str) -> None:
        for child in self._children.pop(path, ()):
            self._forget(child)
        self.sources.pop(path, None)

    def _spend(self, data: Any, source: str) -> None:
        """Count ``data`` (one file or override; at least one value) against the recipe's
        :data:`MAX_VALUES`."""
        self.values += max(1, count_values(data))
        if self.values > MAX_VALUES:
            top = self.sources.get("", "the recipe")
            raise RecipeError(f"{top}: with the files and overrides it takes in ({source} last), "
                              f"the recipe holds more than {MAX_VALUES} values; recipes are "
                              f"limited to {MAX_VALUES}")

    def component(self, value: Any, path: str, source: str, base_dir: Path | None) -> Any:
        """A slot value: a mapping as is; a string names a plug-in or a component YAML file."""
        if not isinstance(value, str):
            return value
        if value.endswith((".yaml", ".yml")):
            file = locate(value, base_dir)
            data = read_yaml(file)
            self._spend(data, display(file))
            if "plugin" not in data:
                raise RecipeError(f"{display(file)} (used for {path}) has no 'plugin' key")
            return resolve_relative_weights(data, file.parent)
        return {"plugin": value}

    def merge(self, dst: dict, src: Mapping, source: str, base_dir: Path | None, prefix: str = "") -> None:
        for key, value in src.items():
            key = str(key)
            path = f"{prefix}.{key}" if prefix else key
            kind = slot_kind(path)
            named = kind is not None and isinstance(value, str)  # a name or file: whole slot
            if kind is not None:
                value = self.component(value, path, source, base_dir)
            if prefix in MULTI_SLOTS and value is None:
                dst.pop(key, None)  # `visual_encoders.s3d: null` drops the stream
                self._mark(path, None, source, prefix)
                continue
            old = dst.get(key)
            swap = named or (
                kind is not None and isinstance(old, Mapping) and isinstance(value, Mapping)
                and "plugin" in value and value.get("plugin") != old.get("plugin")
            )
            if isinstance(value, Mapping) and not swap:
                if not isinstance(old, dict):  # a new mapping: built key by key, so that
                    dst[key] = {}  # slots inside it are resolved like everywhere else
                    self._mark(path, {}, source, prefix)
                self.merge(dst[key], value, source, base_dir, path)
            else:
                dst[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
                self._mark(path, value, source, prefix)

    def add_file(self, path: Path, chain: tuple[Path, ...] = ()) -> None:
        resolved = path.resolve()
        if resolved in chain:
            cycle = " -> ".join(display(p) for p in (*chain, resolved))
            raise RecipeError(f"recipes extend each other in a cycle: {cycle}")
        if len(chain) >= MAX_DEPTH:
            raise RecipeError(f"{display(chain[0])} extends recipes more than {MAX_DEPTH} levels "
                              f"deep; recipes are limited to {MAX_DEPTH}")
        data = read_yaml(path)
        self._spend(data, display(path))
        if chain:  # a recipe's name, description and base flag are its own, never inherited
            for key in OWN_KEYS:
                data.pop(key, None)
        bases = data.pop("extends", None) or []
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise RecipeError(f"{display(path)}: extends must be a file name or a list of them")
        for base in bases:
            self.add_file(locate(base, path.parent), (*chain, resolved))
        self.merge(self.data, resolve_relative_weights(data, path.parent), display(path), path.parent)

    def add_override(self, text: str) -> None:
        if text.startswith("~"):
            return self.remove(text[1:].strip(), override_source(text))
        key, sep, raw = text.partition("=")
        key = key.strip()
        source = override_source(text)
        if not sep or not key:
            raise RecipeError(f"override {text[:80]!r} is not of the form key=value")
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except YAMLLimitError as exc:
            raise RecipeError(f"{source}: the value {exc.problem}") from None
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        if len(parts) > MAX_DEPTH:
            raise RecipeError(f"{source}: the key {_too_deep()}")
        self._spend(value, source)
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        # Walk down existing mappings so the override merges, rather than replaces, a section.
        self.merge(self.data, {parts[0]: nested}, source, Path.cwd())

    def remove(self, key: str, source: str) -> None:
        """``~key``: take ``key`` out of its mapping (a stream out of ``fuser.streams``, an option
        back to its default), as if no layer had set it."""
        parts = key.split(".")
        node: Any = self.data
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not key or "=" in key or not isinstance(node, dict) or parts[-1] not in node:
            raise RecipeError(f"{source}: ~{key} removes a key, but the recipe has no {key!r}"
                              if key and "=" not in key else
                              f"{source}: ~KEY takes a dotted key and no value, e.g. ~fuser.streams.s3d")
        del node[parts[-1]]
        self._mark(key, None, source, ".".join(parts[:-1]))


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------


def load_recipe(
    ref: str | Path, overrides: Sequence[str] = (), registry: Registry | None = None, *,
    random_weights: bool = False, allow_env: bool | None = None, check_weights: bool = False,
) -> Recipe:
    """Read, compose, override, resolve and validate a recipe; build nothing.

    ``random_weights``: set every component's ``weights`` option (nested components included;
    those without the option are untouched) to ``none``, so that nothing is downloaded or
    read. ``allow_env``: let ``${oc.env:NAME}`` read the environment; ``None`` leaves it to
    the variable :data:`ALLOW_ENV_VARIABLE` (``V2A_RECIPE_ALLOW_ENV=1``). ``check_weights``: also
    check that trained weights files fit the models the options describe
    (:func:`v2a.recipe_checks.weights_fit`; it builds models on the meta device, which costs a
    second or two the first time in a process, so ``v2a recipe check`` and ``v2a train`` ask for
    it, while loading the weights reports a misfit in one sentence anyway).
    """
    registry = registry or default_registry()
    path = locate(ref)
    composer = Composer()
    composer.sources[""] = display(path)
    composer.add_file(path)
    for text in overrides:
        composer.add_override(text)
    if allow_env is None:
        allow_env = os.environ.get(ALLOW_ENV_VARIABLE, "").strip().lower() in ("1", "true", "yes")
    return validate_recipe(
        composer, registry, source=display(path), default_name=path.stem, path=path,
        overrides=tuple(overrides), random_weights=random_weights, allow_env=allow_env,
        check_weights=check_weights,
    )


def recipe_options(args: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`load_recipe` that the command line's global flags set
    (``--random-weights``, ``--allow-env``):
    ``load_recipe(ref, overrides, **recipe_options(args))``."""
    return {"random_weights": bool(getattr(args, "random_weights", False)),
            "allow_env": True if getattr(args, "allow_env", False) else None}


def require_runnable(recipe: Recipe) -> None:
    """Refuse a base recipe (``base: true``) for a command that runs a model, naming the
    recipes that extend it."""
    if not recipe.base:
        return
    lacking = [slot for slot in MODEL_SLOTS if not recipe.has(slot)]
    has_not = f" (it has no {' and '.join(lacking)})" if lacking else ""
    children = recipes_extending(recipe.path) if recipe.path is not None else []
    if len(children) > 1:
        instead = f"; run {', '.join(children[:-1])} or {children[-1]} instead"
    elif children:
        instead = f"; run {children[0]} instead"
    else:
        instead = "; run a recipe that extends it"
    raise RecipeError(f"{recipe.source} is a base recipe, meant to be extended{has_not}{instead}")


def blame(composer: Composer, key: str, message: str, whole: bool = False) -> RecipeError:
    """The error about ``key``, naming the file or override that set it (with ``whole``: that
    set something in it last, for a problem of the mapping as a whole)."""
    return RecipeError(f"{composer.source_of(key, latest_below=whole)}: {key}: {message}")


ENV_REFUSAL = (f"which a recipe may read only when you allow it: pass --allow-env or set "
               f"{ALLOW_ENV_VARIABLE}=1")


def unit_of(key: Key) -> Key | None:
    """The slot or section a key lies in (``("codec",)``, ``("visual_encoders", "clip")``,
    ``("training",)``), resolved and validated as one; None above or outside them."""
    if key and (key[0] in SLOTS or key[0] in SECTIONS):
        return key[:1]
    if len(key) >= 2 and key[0] in MULTI_SLOTS:
        return key[:2]
    return None


class _Resolution:
    """Resolves the interpolations of a composed recipe and validates it, one unit (a slot, a
    visual stream or a section) at a time.

    A unit is resolved against what is readable: itself as written over its defaults, the
    units already validated (their effective data: options, defaults and declared
    properties) and the keys outside any unit. A reference into a unit not yet validated
    postpones the unit; rounds repeat until every unit is validated, and a round without
    progress means the units wait for each other in a cycle.
    """

    def __init__(self, composer: Composer, registry: Registry, *, allow_env: bool,
                 random_weights: bool):
        self.composer = composer
        self.registry = registry
        self.allow_env = allow_env
        self.random_weights = random_weights
        self.data = composer.data
        self.kinds: dict[Key, str | type] = {}  # unit -> kind of plug-in, or section schema
        for slot, kind in SLOTS.items():
            if self.data.get(slot) is not None:
                self.kinds[(slot,)] = kind
        for multi, kind in MULTI_SLOTS.items():
            for name in self.data.get(multi) or {}:
                self.kinds[(multi, name)] = kind
        for section, schema in SECTIONS.items():
            self.kinds[(section,)] = schema
        self.effective: dict[Key, Any] = {}  # validated unit -> what interpolations see of it
        self.validated: dict[Key, Any] = {}  # validated unit -> ComponentChoice or section
        self.current: Key | None = None
        self.current_view: Any = None

    def fail(self, key: str, message: str, whole: bool = False) -> RecipeError:
        return blame(self.composer, key, message, whole)

    # -- the rounds -----------------------------------------------------------------------------
    def run(self) -> None:
        for unit, kind in self.kinds.items():  # a misspelt plug-in first, whatever waits for it
            raw = self.raw(unit)
            if isinstance(kind, str) and not has_interpolation(raw) and not (
                    isinstance(raw, Mapping) and has_interpolation(raw.get("plugin"))):
                plugin_spec(raw, dotted(unit), kind, self.registry, self.fail)
        pending = list(self.kinds)
        waiting: dict[Key, Unavailable] = {}
        while pending:
            progressed = False
            for unit in list(pending):
                try:
                    value = self.resolve_unit(unit)
                except Unavailable as exc:
                    waiting[unit] = exc
                    continue
                self.validate_unit(unit, value)
                pending.remove(unit)
                progressed = True
            if not progressed:
                raise self.deadlock(pending, waiting)

    def resolve_unit(self, unit: Key) -> Any:
        raw = self.raw(unit)
        self.current, self.current_view = unit, self.overlay(unit, raw)
        try:
            return self.evaluate(lambda e: e.resolve(raw, unit))
        finally:
            self.current = self.current_view = None

    def evaluate(self, how: Callable[[Evaluator], Any]) -> Any:
        """``how(evaluator)``, its errors made one-sentence recipe errors."""
        evaluator = Evaluator(self.lookup, allow_env=self.allow_env, env_refusal=ENV_REFUSAL,
                              decode=_decode, max_values=MAX_VALUES, max_chars=MAX_BYTES)
        try:
            return how(evaluator)
        except InterpolationError as exc:
            raise self.fail(dotted(exc.at), exc.message) from None
        except LimitError as exc:
            raise self.fail(dotted(exc.at), f"its interpolations expand to more than "
                            f"{exc.limit} {exc.what}; recipes are limited to {exc.limit}") from None

    def deadlock(self, pending: list[Key], waiting: dict[Key, Unavailable]) -> RecipeError:
        """The error for units that wait for each other in a cycle."""
        seen: list[Key] = []
        unit = pending[0]
        while unit not in seen:
            seen.append(unit)
            unit = unit_of(waiting[unit].waiting_for) or waiting[unit].waiting_for
        cycle = seen[seen.index(unit):]
        edges = [waiting[u] for u in cycle]
        names = [dotted(u) for u in cycle]
        listed = ", ".join(names[:-1]) + f" and {names[-1]}"
        chain = ", ".join(f"{dotted(e.at)} -> {e.reference}" for e in edges)
        first = edges[0]
        return self.fail(dotted(first.at), (
            f"{first.reference} cannot be resolved: {listed} refer to each other in a cycle "
            f"({chain}); write one of these values out"))

    # -- what interpolations see ------------------------------------------------------------
    def raw(self, unit: Key) -> Any:
        node: Any = self.data
        for part in unit:
            node = node.get(part) if isinstance(node, Mapping) else None
        return node

    def overlay(self, unit: Key, raw: Any) -> Any:
        """A unit as its own interpolations see it: as written, over its defaults."""
        if not isinstance(raw, Mapping):
            return raw if raw is not None else {}
        kind = self.kinds[unit]
        schema = kind if isinstance(kind, type) else None
        plugin = raw.get("plugin")
        if schema is None and isinstance(plugin, str) and not has_interpolation(plugin):
            try:
                schema = self.registry.get(kind, plugin).spec.config
            except PluginError:
                schema = None
        return {**field_defaults(schema), **raw} if schema is not None else dict(raw)

    def readable(self, unit: Key) -> tuple[Any, bool]:
        """``(data, final)`` of a unit, or :class:`Unavailable` while it waits for others."""
        if unit in self.effective:
            return self.effective[unit], True
        if unit == self.current:
            return self.current_view, False
        if unit in self.kinds:
            raise Unavailable(unit)
        if len(unit) == 2:
            streams = [dotted(u) for u in self.kinds if u[0] == unit[0]]
            near = closest(dotted(unit), streams)
            hint = ("; did you mean " + " or ".join(repr(n) for n in near) + "?") if near else ""
            raise Absent(f"the recipe has no {dotted(unit)}{hint}")
        raise Absent(f"the recipe has no {dotted(unit)}")

    def lookup(self, key: Key) -> tuple[Any, bool]:
        unit = unit_of(key)
        if unit is None:
            if len(key) == 1 and key[0] in MULTI_SLOTS:  # all streams: each one must be ready
                streams = [u for u in self.kinds if u[0] == key[0]]
                return {u[1]: self.readable(u)[0] for u in streams}, False
            return walk(self.data, key), False
        data, final = self.readable(unit)
        label = dotted(unit)
        if isinstance(self.validated.get(unit), ComponentChoice):
            label = f"{label} ({self.validated[unit].plugin})"
        return walk(data, key, start=len(unit), name=label), final

    # -- validation ---------------------------------------------------------------------------
    def validate_unit(self, unit: Key, value: Any) -> None:
        kind, name = self.kinds[unit], dotted(unit)
        if isinstance(kind, type):
            value = {} if value is None else value
            if not isinstance(value, Mapping):
                raise self.fail(name, "must be a mapping")
            try:
                section = validate(value, kind, name)
            except SchemaError as exc:
                raise self.fail(exc.key, exc.message, exc.whole) from None
            self.validated[unit], self.effective[unit] = section, to_data(section)
            return
        choice = validate_component(value, name, kind, self.registry, self.fail,
                                    random_weights=self.random_weights)
        self.validated[unit], self.effective[unit] = choice, choice.effective_data()

    def meta(self, key: str) -> Any:
        """A top-level key outside the units (``name``), resolved once every unit is."""
        return self.evaluate(lambda e: e.resolve(self.data[key], (key,)))


def _decode(text: str) -> Any:
    """Text in an interpolation read as YAML (text that is not YAML stays text)."""
    try:
        return load_yaml(text)
    except YAMLLimitError as exc:
        raise ValueError(f"the text {exc.problem}") from None
    except yaml.YAMLError:
        return text


def field_defaults(schema: type) -> dict[str, Any]:
    """The defaults of a config dataclass as plain data, fields without one and fields that
    hold nested components left out."""
    out = {}
    for name, (_, f) in fields_of(schema).items():
        if f.metadata.get(COMPONENT_FIELD):
            continue
        if f.default is not dataclasses.MISSING:
            out[name] = to_data(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = to_data(f.default_factory())
    return out


def validate_recipe(
    composer: Composer, registry: Registry, *, source: str, default_name: str,
    path: Path | None = None, overrides: tuple[str, ...] = (), random_weights: bool = False,
    allow_env: bool = False, check_weights: bool = False,
) -> Recipe:
    """Resolve and validate the composed data of ``composer`` into a :class:`Recipe` (see
    :class:`_Resolution` for the order), then check that its components fit together
    (:func:`v2a.recipe_checks.check_consistency`)."""
    data = composer.data

    def fail(key: str, message: str, whole: bool = False) -> RecipeError:
        return blame(composer, key, message, whole)

    for key in data:
        if key not in TOP_KEYS:
            raise fail(str(key), f"unknown key; {suggestion(str(key), TOP_KEYS, 'top-level keys')}")
    for multi in MULTI_SLOTS:
        if not isinstance(data.get(multi) or {}, Mapping):
            raise fail(multi, "must be a mapping of stream names to components")

    resolution = _Resolution(composer, registry, allow_env=allow_env, random_weights=random_weights)
    resolution.run()
    meta = {key: resolution.meta(key) for key in OWN_KEYS if key in data}
    for key in ("name", "description"):
        if key in meta and not isinstance(meta[key], str):
            raise fail(key, "must be a string")
    if "base" in meta and not isinstance(meta["base"], bool):
        raise fail("base", "must be true or false (true: a recipe meant to be extended, not run)")

    sections = {name: resolution.validated[(name,)] for name in SECTIONS}
    components = {dotted(unit): choice for unit, choice in resolution.validated.items()
                  if isinstance(choice, ComponentChoice)}
    order = [*SLOTS, *(f"{m}.{s}" for m in MULTI_SLOTS for s in data.get(m) or {})]
    recipe = Recipe(
        source=source,
        name=meta.get("name") or default_name,
        description=meta.get("description") or "",
        components={slot: components[slot] for slot in order if slot in components},
        base=meta.get("base", False),
        overrides=tuple(overrides),
        path=path,
        **sections,
    )
    from v2a.recipe_checks import check_consistency  # it reads Recipe: imported when needed

    check_consistency(recipe, composer.source_of, registry, weights=check_weights)
    return recipe


def plugin_spec(value: Any, slot: str, kind: str, registry: Registry, fail) -> ComponentSpec:
    """The spec of the plug-in a slot's value names, or the error that says what is wrong."""
    if not isinstance(value, Mapping):
        raise fail(slot, "must name a plug-in (`plugin: <name>` and its options)")
    plugin = value.get("plugin")
    if not isinstance(plugin, str):
        raise fail(f"{slot}.plugin", f"is required: the name of a {kind} plug-in (see `v2a plugins`)")
    try:
        return registry.get(kind, plugin).spec
    except PluginError as exc:  # unknown or ambiguous name
        raise fail(f"{slot}.plugin", str(exc)) from None


def declared_properties(kind: str, plugin: str, config: Any, registry: Registry) -> dict[str, Any]:
    """What the plug-in declares its component will have (empty when it declares nothing, or
    when its declaration needs something the user must fix, which building it reports)."""
    try:
        return dict(registry.properties(kind, plugin, config))
    except UserError:
        return {}


def validate_component(value: Any, slot: str, kind: str, registry: Registry, fail, *,
                       random_weights: bool = False) -> ComponentChoice:
    """A slot's (resolved) value validated against its plug-in's config, nested components
    included; with ``random_weights``, a ``weights`` option is set to ``none``."""
    spec = plugin_spec(value, slot, kind, registry, fail)
    options = dict(value)
    plugin = options.pop("plugin")
    if spec.config is None:
        if options:
            raise fail(f"{slot}.{next(iter(options))}", f"{kind} {plugin!r} takes no options")
        return ComponentChoice(kind=kind, plugin=plugin, options={}, config=None,
                               properties=declared_properties(kind, plugin, None, registry))
    config_fields = dataclasses.fields(spec.config)
    if random_weights and any(f.name == "weights" for f in config_fields):
        options["weights"] = NONE
    for f in config_fields:  # a nested component named by its plug-in alone
        if f.metadata.get(COMPONENT_FIELD) and isinstance(options.get(f.name), str):
            options[f.name] = {"plugin": options[f.name]}
    try:
        config = validate(options, spec.config, slot)
    except SchemaError as exc:
        message = exc.message
        if message.startswith("unknown key"):
            message = f"not an option of {kind} {plugin!r}" + message[len("unknown key"):]
        raise fail(exc.key, message, exc.whole) from None
    nested = {}
    for f in config_fields:
        inner_kind = f.metadata.get(COMPONENT_FIELD)
        if inner_kind and getattr(config, f.name):
            inner = validate_component(getattr(config, f.name), f"{slot}.{f.name}", inner_kind,
                                       registry, fail, random_weights=random_weights)
            nested[f.name] = inner
            setattr(config, f.name, {"plugin": inner.plugin, **inner.options})
    return ComponentChoice(kind=kind, plugin=plugin, options=options, config=config, nested=nested,
                           properties=declared_properties(kind, plugin, config, registry))


def dataclass_doc(schema: type) -> list[tuple[str, str, str]]:
    """``(field, type, default)`` rows of a schema, for the recipes reference."""
    rows = []
    for name, (tp, f) in fields_of(schema).items():
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((name, describe(tp), default))
    return rows
