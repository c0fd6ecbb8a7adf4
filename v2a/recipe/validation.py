"""A composed recipe resolved and validated into a :class:`~v2a.recipe.config.Recipe`.

Interpolations (``${codec.n_codebooks}``, :mod:`v2a.interpolation`) are resolved after
composition, against each slot's *effective* options: the options as written, the plug-in's
defaults, and the properties the plug-in declares its component will have
(:attr:`v2a.registry.ComponentSpec.properties`; they win over an option of the same name). So
each slot and section is validated as soon as what it refers to is, and then seen by the
others in full (:class:`_Resolution`). Every key, type, range and plug-in name is checked
against the section schemas and each plug-in's config dataclass, then
:func:`v2a.recipe.consistency.check_consistency` checks that the components fit together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from v2a.errors import PluginError, RecipeError, UserError, closest, suggestion
from v2a.interpolation import (
    Absent,
    Evaluator,
    InterpolationError,
    Key,
    LimitError,
    Unavailable,
    dotted,
    has_interpolation,
    walk,
)
from v2a.recipe.compose import Composer
from v2a.recipe.config import (
    MULTI_SLOTS,
    OWN_KEYS,
    SECTIONS,
    SLOTS,
    TOP_KEYS,
    ComponentChoice,
    Recipe,
)
from v2a.recipe.consistency import check_consistency
from v2a.recipe.files import ALLOW_ENV_VARIABLE, MAX_BYTES, MAX_VALUES, YAMLLimitError, load_yaml
from v2a.registry import COMPONENT_FIELD, ComponentSpec, Registry
from v2a.schema import SchemaError, fields_of, to_data, validate
from v2a.weights import NONE


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
    (:func:`v2a.recipe.consistency.check_consistency`)."""
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
    check_consistency(recipe, composer.source_of, registry, weights=check_weights)
    return recipe


def plugin_spec(value: Any, slot: str, kind: str, registry: Registry,
                fail: Callable[..., RecipeError]) -> ComponentSpec:
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


def validate_component(value: Any, slot: str, kind: str, registry: Registry,
                       fail: Callable[..., RecipeError], *,
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

