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
    generator: {plugin: ..., ...}
    reranker: none                     # a plug-in name alone: its defaults
    data: {...}
    training: {...}
    sampling: {...}

Composition rules: files named by ``extends`` are merged in order, then the file itself; a
component slot merges key by key unless the newer layer names a different ``plugin``, in which
case the slot is replaced (options of one plug-in never leak into another). ``key=value``
overrides from the command line are applied last, with the same rules (``codec=encodec`` swaps
the codec, ``codec.n_codebooks=4`` sets one option, ``visual_encoders.s3d=null`` drops a
stream). Values are parsed as YAML; OmegaConf ``${...}`` interpolations are resolved at the end.

Validation happens before anything is built: every key, type and plug-in name is checked
against the section schemas below and each plug-in's config dataclass. A recipe can only reach
code through registered plug-in names; YAML is read with the safe loader, so no tag can import
or run anything.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from v2a.errors import PluginError, RecipeError, suggestion
from v2a.interfaces import Component
from v2a.registry import COMPONENT_FIELD, Registry, default_registry
from v2a.schema import SchemaError, describe, fields_of, to_data, validate

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
    clip_seconds: float = 10.0  # training window
    num_workers: int = 2


@dataclass
class TrainingConfig:
    """Optimisation (read by ``v2a train``). Defaults follow the notes; *assumed* ones say so."""

    steps: int = 100_000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4  # assumed
    weight_decay: float = 1e-5  # assumed
    warmup_steps: int = 1000
    grad_clip: float = 1.0  # assumed
    ema: float = 0.999  # assumed; 0 disables EMA weights
    precision: Precision = "fp32"
    level_policy: Literal["per_level", "joint"] = "per_level"  # assumed: per_level
    condition_dropout: float = 0.1  # assumed; for classifier-free guidance
    aux_regression_weight: float = 0.1  # assumed
    aux_contrastive_weight: float = 0.1  # assumed
    seed: int = 0
    out_dir: str = "runs"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 50
    task: Literal["generator", "reranker"] = "generator"  # what `v2a train` trains
    lr_min: float = 0.0  # the cosine decay ends at this learning rate
    train_split: str = "train"  # manifest split trained on
    val_split: str = "val"  # manifest split of the validation loss and the logged samples
    eval_every: int = 1000  # steps between validation losses; 0 = never
    sample_every: int = 5000  # steps between generated audio samples in TensorBoard; 0 = never
    num_sample_videos: int = 4  # fixed validation clips whose generated audio is logged


@dataclass
class SamplingConfig:
    """Iterative masked decoding (read by ``v2a generate``)."""

    steps: list[int] = field(default_factory=lambda: [16, 8, 4, 2, 1, 1, 1, 1, 1])  # per level
    temperature: float = 1.0  # initial, annealed to 0 over the steps when anneal is true
    anneal_temperature: bool = True
    top_k: int | None = None
    top_p: float | None = None
    cfg_scale: float = 3.0  # assumed; 0 = unconditional, 1 = conditional only
    candidates: int = 1  # B candidates, reranked by the recipe's reranker
    seed: int = 0
    precision: Precision = "fp32"


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
META_KEYS = ("name", "description", "extends")
TOP_KEYS = (*META_KEYS, *SLOTS, *MULTI_SLOTS, *SECTIONS)
COMMAND_LINE = "command line"


@dataclass
class ComponentChoice:
    """A slot's plug-in, its validated config, the options as written, and the components
    nested in its options (fields declared with :func:`v2a.registry.component_option`)."""

    kind: str
    plugin: str
    options: dict[str, Any]
    config: Any
    nested: dict[str, ComponentChoice] = field(default_factory=dict)

    def as_data(self) -> dict[str, Any]:
        """The slot as plain data with every default filled in."""
        data = to_data(self.config) if self.config is not None else {}
        data.update({name: choice.as_data() for name, choice in self.nested.items()})
        return {"plugin": self.plugin, **data}


@dataclass
class Recipe:
    """A loaded, composed and validated recipe."""

    source: str
    name: str
    description: str
    components: dict[str, ComponentChoice]  # "codec", "visual_encoders.clip", ...
    data: DataConfig
    training: TrainingConfig
    sampling: SamplingConfig

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

    def as_data(self) -> dict[str, Any]:
        """The resolved recipe with every default filled in (what ``v2a recipe show`` prints)."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
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


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a float as YAML 1.2 does (YAML 1.1 wants a dot,
    ``1.0e-3``, and would hand ``lr: 1e-3`` to the schema as a string)."""


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse recipe YAML: safe (no Python objects), numbers as YAML 1.2 reads them."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 (a SafeLoader subclass)


def builtin_recipes_dir() -> Path:
    """Folder of the recipes shipped with v2a (``recipes/`` in the source tree)."""
    return Path(str(importlib.resources.files("v2a_recipes")))


def builtin_recipe_names() -> list[str]:
    return sorted(p.stem for p in builtin_recipes_dir().glob("*.yaml"))


def display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def locate(ref: str | Path, relative_to: Path | None = None) -> Path:
    """A recipe file from a path, or from the name of a built-in recipe (``tiny``)."""
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
    where = f" (looked beside {display(relative_to)})" if relative_to is not None else ""
    names = builtin_recipe_names()
    raise RecipeError(
        f"recipe file {ref!r} does not exist{where}; "
        f"{suggestion(Path(ref).stem, names, 'built-in recipes')}"
    )


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {display(path)}: {exc.strerror or exc}") from None
    try:
        data = load_yaml(text)
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


class Composer:
    """Merges recipe layers into plain data, remembering the source of every key."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sources: dict[str, str] = {}  # dotted key -> the file (or override) that set it

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
            path = path.rpartition(".")[0]
        return self.sources.get("", "recipe")

    def _mark(self, path: str, value: Any, source: str) -> None:
        for key in [k for k in self.sources if k == path or k.startswith(path + ".")]:
            del self.sources[key]
        self.sources[path] = source
        if isinstance(value, Mapping):
            for k, v in value.items():
                self._mark(f"{path}.{k}", v, source)

    def component(self, value: Any, path: str, source: str, base_dir: Path | None) -> Any:
        """A slot value: a mapping as is; a string names a plug-in or a component YAML file."""
        if not isinstance(value, str):
            return value
        if value.endswith((".yaml", ".yml")):
            file = locate(value, base_dir)
            data = read_yaml(file)
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
                self._mark(path, None, source)
                continue
            old = dst.get(key)
            swap = named or (
                kind is not None and isinstance(old, Mapping) and isinstance(value, Mapping)
                and "plugin" in value and value.get("plugin") != old.get("plugin")
            )
            if isinstance(value, Mapping) and not swap:
                if not isinstance(old, dict):  # a new mapping: built key by key, so that
                    dst[key] = {}  # slots inside it are resolved like everywhere else
                    self._mark(path, {}, source)
                self.merge(dst[key], value, source, base_dir, path)
            else:
                dst[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
                self._mark(path, value, source)

    def add_file(self, path: Path, chain: tuple[Path, ...] = ()) -> None:
        resolved = path.resolve()
        if resolved in chain:
            cycle = " -> ".join(display(p) for p in (*chain, resolved))
            raise RecipeError(f"recipes extend each other in a cycle: {cycle}")
        data = read_yaml(path)
        if chain:  # a recipe's name and description are its own, never inherited
            data.pop("name", None)
            data.pop("description", None)
        bases = data.pop("extends", None) or []
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise RecipeError(f"{display(path)}: extends must be a file name or a list of them")
        for base in bases:
            self.add_file(locate(base, path.parent), (*chain, resolved))
        self.merge(self.data, resolve_relative_weights(data, path.parent), display(path), path.parent)

    def add_override(self, text: str) -> None:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"override {text!r} is not of the form key=value")
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        # Walk down existing mappings so the override merges, rather than replaces, a section.
        self.merge(self.data, {parts[0]: nested}, f"{COMMAND_LINE} ({text})", Path.cwd())


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------


def load_recipe(
    ref: str | Path, overrides: Sequence[str] = (), registry: Registry | None = None
) -> Recipe:
    """Read, compose, override, resolve and validate a recipe; build nothing."""
    registry = registry or default_registry()
    path = locate(ref)
    composer = Composer()
    composer.sources[""] = display(path)
    composer.add_file(path)
    for text in overrides:
        composer.add_override(text)
    data = resolve_interpolations(composer)
    return validate_recipe(data, composer, registry, display(path), default_name=path.stem)


def resolve_interpolations(composer: Composer) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(OmegaConf.create(composer.data), resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        source = composer.source_of(str(key))
        msg = str(exc).splitlines()[0]
        raise RecipeError(f"{source}: {key or 'an interpolation'}: {msg}") from None


def validate_recipe(
    data: dict[str, Any], composer: Composer, registry: Registry, source: str, default_name: str
) -> Recipe:
    def fail(key: str, message: str, whole: bool = False) -> RecipeError:
        return RecipeError(f"{composer.source_of(key, latest_below=whole)}: {key}: {message}")

    for key in data:
        if key not in TOP_KEYS:
            raise fail(str(key), f"unknown key; {suggestion(str(key), TOP_KEYS, 'top-level keys')}")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise fail(key, "must be a string")

    components: dict[str, ComponentChoice] = {}
    slots = [(slot, kind) for slot, kind in SLOTS.items() if data.get(slot) is not None]
    for multi, kind in MULTI_SLOTS.items():
        streams = data.get(multi) or {}
        if not isinstance(streams, Mapping):
            raise fail(multi, "must be a mapping of stream names to components")
        slots += [(f"{multi}.{name}", kind) for name in streams]
    for slot, kind in slots:
        head, _, stream = slot.partition(".")
        value = data[head][stream] if stream else data[head]
        components[slot] = validate_component(value, slot, kind, registry, fail)

    sections = {}
    for section, schema in SECTIONS.items():
        value = data.get(section) or {}
        if not isinstance(value, Mapping):
            raise fail(section, "must be a mapping")
        try:
            sections[section] = validate(value, schema, section)
        except SchemaError as exc:
            raise fail(exc.key, exc.message, exc.whole) from None

    return Recipe(
        source=source,
        name=data.get("name") or default_name,
        description=data.get("description") or "",
        components=components,
        **sections,
    )


def validate_component(value: Any, slot: str, kind: str, registry: Registry, fail) -> ComponentChoice:
    if not isinstance(value, Mapping):
        raise fail(slot, "must name a plug-in (`plugin: <name>` and its options)")
    options = dict(value)
    plugin = options.pop("plugin", None)
    if not isinstance(plugin, str):
        raise fail(f"{slot}.plugin", f"is required: the name of a {kind} plug-in (see `v2a plugins`)")
    try:
        spec = registry.get(kind, plugin).spec
    except PluginError as exc:  # unknown or ambiguous name
        raise fail(f"{slot}.plugin", str(exc)) from None
    if spec.config is None:
        if options:
            raise fail(f"{slot}.{next(iter(options))}", f"{kind} {plugin!r} takes no options")
        return ComponentChoice(kind=kind, plugin=plugin, options={}, config=None)
    for f in dataclasses.fields(spec.config):  # a nested component named by its plug-in alone
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
    for f in dataclasses.fields(spec.config):
        inner_kind = f.metadata.get(COMPONENT_FIELD)
        if inner_kind and getattr(config, f.name):
            inner = validate_component(getattr(config, f.name), f"{slot}.{f.name}", inner_kind,
                                       registry, fail)
            nested[f.name] = inner
            setattr(config, f.name, {"plugin": inner.plugin, **inner.options})
    return ComponentChoice(kind=kind, plugin=plugin, options=options, config=config, nested=nested)


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
