"""The component registry: which plug-in provides which component, under which name.

Plug-ins are found through the ``v2a`` entry-point group, built-ins and third-party packages
alike (there is no other door). Each plug-in module implements
:func:`v2a.hookspecs.v2a_register_components` and hands :class:`ComponentSpec` objects to the
``register`` callback it receives, and/or :func:`v2a.hookspecs.v2a_register_training_tasks`,
handing over :class:`TrainingTaskSpec` objects (what ``v2a train`` can train; the core's own
``generator`` task comes through this door too). The registry then

* rejects a name two plug-ins claim for the same kind, naming both providers (the name becomes
  unusable until one of them is uninstalled);
* reports a plug-in that fails to import, or whose hook raises (``sys.exit()`` included), by
  name, while the others keep working;
* identifies a plug-in by its distribution and entry-point name: when two distributions each
  have an entry point called ``x``, both are loaded (as ``<distribution>:x``), so a package
  cannot replace a built-in by naming its entry point like the built-in's; a component both
  register falls under the rule above;
* marks a component whose optional dependencies are missing, with the command that installs
  them, instead of failing at start-up.

Environment switches:

* ``V2A_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry point automatically (the core's training
  task, entry point ``generator_task``, included);
* ``V2A_PLUGINS=name1,name2``: load these entry points (by entry-point name) even then.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from v2a import hookspecs
from v2a.errors import PluginError, suggestion
from v2a.schema import SchemaError, validate

if TYPE_CHECKING:
    from v2a.interfaces import Component

ENTRY_POINT_GROUP = "v2a"
DISABLE_AUTOLOAD_ENV = "V2A_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "V2A_PLUGINS"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]*")
#: A training task's export file name: a plain name (no folder) ending ``.safetensors``.
EXPORT_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.safetensors")
#: The component kinds, by the names recipes and plug-ins use: the keys of
#: :data:`v2a.interfaces.KINDS`, kept here so that listing and validating plug-ins imports no
#: torch (tests/test_startup.py keeps the two equal).
KIND_NAMES = ("codec", "visual_encoder", "audio_encoder", "fuser", "generator", "reranker",
              "text_encoder")


@dataclass(frozen=True)
class ComponentSpec:
    """One component a plug-in provides.

    Args:
        kind: the interface it implements, one of :data:`KIND_NAMES`
            (``codec``, ``visual_encoder``, ``audio_encoder``, ``fuser``, ``generator``,
            ``reranker``, ``text_encoder``).
        name: what recipes call it (``plugin: <name>``); lowercase letters, digits, ``_``, ``-``.
        build: ``build(config) -> Component``; receives an instance of ``config``.
        config: a dataclass of the options a recipe may set; its field types and defaults are
            the schema recipes are validated against. ``None`` for a component with no options.
        requires: importable top-level modules the component needs beyond v2a's own
            dependencies (e.g. ``("dac",)``); checked without importing them.
        install: how to get those, shown when one is missing (``pip install 'v2a[dac]'``).
        description: one line for ``v2a plugins``.
        properties: ``properties(config) -> {attribute: value}``: the interface attributes the
            built component will have (a codec's ``n_codebooks``, a visual encoder's ``dim``,
            ...), computed from its validated config alone: no building, no weights, no import
            of a heavy library. A subset is fine: leave out what the config cannot tell (an
            attribute a checkpoint decides). Recipes use it to resolve ``${codec.n_codebooks}``
            and to check that components fit together before anything is built;
            :func:`v2a.testing.check_declared_properties` checks it against the built
            component. ``None``: nothing declared.
        state_dict_weights: the component's ``weights`` option names a ``.safetensors`` file
            holding its own ``state_dict()``, loaded strictly (a trained fuser or generator, a
            fitted codec). ``v2a recipe check`` then compares the file's tensor shapes with a
            model built on the meta device from the recipe's options.
        pretrained_files: ``pretrained_files(config) -> list[PretrainedFile]``
            (:class:`v2a.pretrained.PretrainedFile`): the published files building the component
            from ``config`` would download through its libraries (``weights: pretrained``, or
            the plug-in's other download options); ``[]`` when that config downloads nothing
            (``weights: none``, a local file). Building the list uses no network (it may import
            the plug-in's library); it may raise the :class:`v2a.errors.UserError` building would
            (``pretrained`` for a model no library downloads). ``v2a download`` fetches the
            files ahead of time and ``v2a download --check`` finds them offline. ``None``:
            nothing declared (the command then says the library downloads on first use).
    """

    kind: str
    name: str
    build: Callable[[Any], Component]
    config: type | None = None
    requires: tuple[str, ...] = ()
    install: str = ""
    description: str = ""
    properties: Callable[[Any], Mapping[str, Any]] | None = None
    state_dict_weights: bool = False
    pretrained_files: Callable[[Any], list[Any]] | None = None

    def missing_requirements(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


COMPONENT_FIELD = "v2a_component"


@dataclass(frozen=True, kw_only=True)
class TrainingTaskSpec:
    """One training task a plug-in provides: what ``v2a train`` trains when a recipe says
    ``training.task: <name>``.

    Args:
        name: what recipes call it; lowercase letters, digits, ``_``, ``-``.
        build: ``build(recipe) -> TrainingTask`` (:class:`v2a.tasks.TrainingTask`):
            the task built from a loaded :class:`~v2a.recipe.Recipe`.
        exports: ``{recipe slot: file name}``: the slots the task trains, in the order its
            parameters are built, each with the name of the file its trained weights are
            exported as in the run folder (``{"fuser": "fuser.safetensors", ...}``). Declared
            here so that the trainer can check a recipe, and other commands find a run's
            files (:func:`v2a.tasks.exported_weights`), without building the task.
        description: one line for ``v2a plugins``.
        optional_exports: ``{recipe slot: file name}`` of slots the task also trains and
            exports when the recipe has them and they have weights to train (the generator
            task's learned ``text_encoder``); a recipe need not have them.
    """

    name: str
    build: Callable[[Any], Any]
    exports: Mapping[str, str]
    description: str = ""
    optional_exports: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def slots(self) -> tuple[str, ...]:
        """The recipe slots the task trains (a recipe must have them all)."""
        return tuple(self.exports)

    @property
    def export_files(self) -> dict[str, str]:
        """Every slot the task may export, with its file name: ``exports``, then
        ``optional_exports``."""
        return {**self.exports, **self.optional_exports}


#: The kind ``v2a plugins`` shows a training task under.
TRAINING_TASK = "training_task"


def component_option(kind: str, plugin: str | None = None, **options: Any) -> Any:
    """A config field that holds another component, written ``{plugin: name, ...options}``.

    Recipes validate it like a slot (the plug-in name and its options, before anything is
    built); the owning component builds it with :meth:`Registry.build_from`. Example: a reranker
    that embeds audio with any audio encoder::

        audio_encoder: dict = component_option("audio_encoder", "beats")
    """
    default = {"plugin": plugin, **options} if plugin else {}
    return field(default_factory=lambda: dict(default), metadata={COMPONENT_FIELD: kind})


@dataclass
class PluginInfo:
    """A loaded (or failed) plug-in module and the distribution that provides it."""

    name: str
    module: str
    provider: str
    version: str
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.provider} {self.version} ({self.module})"


@dataclass
class Entry:
    spec: ComponentSpec
    plugin: PluginInfo

    @property
    def status(self) -> str:
        missing = self.spec.missing_requirements()
        if not missing:
            return "ok"
        how = f"; install with: {self.spec.install}" if self.spec.install else ""
        return f"missing {', '.join(missing)}{how}"


@dataclass
class TrainingTaskEntry:
    spec: TrainingTaskSpec
    plugin: PluginInfo


@dataclass
class Registry:
    """Components by ``(kind, name)`` and training tasks by name, with the plug-ins that
    provided them. ``conflicts`` holds both (a training task under the kind
    :data:`TRAINING_TASK`)."""

    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    conflicts: dict[tuple[str, str], list[PluginInfo]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    training_tasks: dict[str, TrainingTaskEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def from_environment(cls) -> Registry:
        """Load the ``v2a`` entry points, honouring the environment switches."""
        registry = cls()
        wanted = {n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()}
        autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in ("1", "true", "yes")
        chosen = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
                  if autoload or ep.name in wanted]
        for ep, name in zip(chosen, plugin_names(chosen)):
            registry.load_entry_point(ep, name=name)
        for name in sorted(wanted - {ep.name for ep in chosen}):
            registry.problems.append(
                f"{PLUGINS_ENV} names {name!r}, but no installed package has a v2a entry point "
                "of that name"
            )
        return registry

    def load_entry_point(self, ep: importlib.metadata.EntryPoint, *, name: str | None = None) -> None:
        """Import the plug-in module ``ep`` names and register it as ``name`` (default: the
        entry point's name). A module that fails to import, however (an exception,
        ``sys.exit()``), is reported as broken; only Ctrl-C goes through."""
        provider, version = distribution_of(ep)
        info = PluginInfo(name=name or ep.name, module=ep.value, provider=provider, version=version)
        try:
            module = ep.load()
        except BaseException as exc:  # a broken plug-in must not take the others down
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._fail(info, f"failed to import: {describe_failure(exc)}")
            return
        self.register_module(module, info=info)

    def register_module(
        self, module: ModuleType | object, *, name: str | None = None, info: PluginInfo | None = None
    ) -> None:
        """Register a plug-in object (a module, usually) and the components its hook gives."""
        if info is None:
            module_name = getattr(module, "__name__", type(module).__name__)
            info = PluginInfo(
                name=name or module_name, module=module_name, provider="(registered in code)",
                version="-",
            )
        if info.name in self.plugins:
            self.problems.append(f"plug-in {info.name!r} is registered twice; the second is ignored")
            return
        try:
            self._pm.register(module, name=info.name)
        except Exception as exc:
            self._fail(info, f"is not a valid v2a plug-in: {exc}")
            return
        self.plugins[info.name] = info
        for hook, add in (("v2a_register_components", self._add),
                          ("v2a_register_training_tasks", self._add_training_task)):
            specs = self._call_hook(hook, info)
            if specs is None:
                return
            for spec in specs:
                add(spec, info)

    def _call_hook(self, hook: str, info: PluginInfo) -> list[Any] | None:
        """What plug-in ``info`` hands to ``register`` in its implementation of ``hook`` (none
        when it has none); ``None`` when the hook raised (the plug-in is then broken)."""
        specs: list[Any] = []
        for impl in getattr(self._pm.hook, hook).get_hookimpls():
            if impl.plugin_name != info.name:
                continue
            try:
                impl.function(register=specs.append)
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._fail(info, f"raised in {hook}: {describe_failure(exc)}")
                return None
        return specs

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.error = message
        self.plugins[info.name] = info
        self.problems.append(f"plug-in {info.name!r} from {info.provider} {message}")

    def _add(self, spec: ComponentSpec, info: PluginInfo) -> None:
        if not isinstance(spec, ComponentSpec):
            self.problems.append(
                f"plug-in {info.name!r} registered {spec!r}, which is not a ComponentSpec; ignored"
            )
            return
        if spec.kind not in KIND_NAMES:
            self.problems.append(
                f"plug-in {info.name!r} registered {spec.name!r} as unknown kind {spec.kind!r} "
                f"({suggestion(spec.kind, KIND_NAMES, 'kinds')}); ignored"
            )
            return
        if not NAME_PATTERN.fullmatch(spec.name):
            self.problems.append(
                f"plug-in {info.name!r} registered {spec.kind} {spec.name!r}: names use lowercase "
                "letters, digits, '_' and '-', starting with a letter; ignored"
            )
            return
        if spec.config is not None and not dataclasses.is_dataclass(spec.config):
            self.problems.append(
                f"plug-in {info.name!r} gave {spec.kind} {spec.name!r} a config that is not a "
                "dataclass; ignored"
            )
            return
        self._claim(self.entries, (spec.kind, spec.name), Entry(spec=spec, plugin=info))

    def _add_training_task(self, spec: TrainingTaskSpec, info: PluginInfo) -> None:
        if not isinstance(spec, TrainingTaskSpec):
            self.problems.append(
                f"plug-in {info.name!r} registered {spec!r} as a training task, which is not a "
                "TrainingTaskSpec; ignored"
            )
            return
        if not NAME_PATTERN.fullmatch(spec.name):
            self.problems.append(
                f"plug-in {info.name!r} registered training task {spec.name!r}: names use "
                "lowercase letters, digits, '_' and '-', starting with a letter; ignored"
            )
            return
        bad = [f for f in spec.exports.values() if not EXPORT_FILE.fullmatch(str(f))]
        if not spec.exports or bad:
            what = f"export file name {bad[0]!r}" if bad else "no exports"
            self.problems.append(
                f"plug-in {info.name!r} gave training task {spec.name!r} {what} (each trained "
                "slot needs a plain file name ending .safetensors); ignored"
            )
            return
        self._claim(self.training_tasks, spec.name, TrainingTaskEntry(spec=spec, plugin=info))

    def _claim(self, table: dict, key: Any, entry: Entry | TrainingTaskEntry) -> None:
        """Put ``entry`` into ``table`` under ``key``, unless another plug-in claims that key:
        then neither keeps it (see :attr:`conflicts`)."""
        kind, name = key if isinstance(key, tuple) else (TRAINING_TASK, key)
        if (kind, name) in self.conflicts:
            self.conflicts[(kind, name)].append(entry.plugin)
        elif key in table:
            first = table.pop(key)
            self.conflicts[(kind, name)] = [first.plugin, entry.plugin]
        else:
            table[key] = entry
            return
        providers = " and ".join(p.label for p in self.conflicts[(kind, name)])
        self.problems.append(
            f"{kind} name {name!r} is claimed by {providers}; it is disabled until one of "
            "them is uninstalled"
        )

    # -- lookup -----------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self.entries if k == kind)

    def kinds_of(self, name: str) -> list[str]:
        """The kinds that have a component named ``name`` (a plug-in may give two kinds one
        name, as ImageBind's audio and vision towers)."""
        return sorted(k for (k, n) in self.entries if n == name)

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``kind``/``name``, or a :class:`PluginError` saying what to do."""
        if kind not in KIND_NAMES:
            raise PluginError(
                f"unknown component kind {kind!r}; {suggestion(kind, KIND_NAMES, 'kinds')}")
        key = (kind, name)
        if key in self.entries:
            return self.entries[key]
        if key in self.conflicts:
            providers = " and ".join(p.label for p in self.conflicts[key])
            raise PluginError(
                f"{kind} {name!r} is provided by both {providers}; uninstall one of them"
            )
        raise PluginError(
            f"no {kind} plug-in is named {name!r}; "
            f"{suggestion(name, self.names(kind), kind + ' plug-ins')} (see `v2a plugins`)"
        )

    def training_task_names(self) -> list[str]:
        return sorted(self.training_tasks)

    def training_task(self, name: str) -> TrainingTaskSpec:
        """The training task ``name``, or a :class:`PluginError` saying what to do."""
        if name in self.training_tasks:
            return self.training_tasks[name].spec
        if (TRAINING_TASK, name) in self.conflicts:
            providers = " and ".join(p.label for p in self.conflicts[(TRAINING_TASK, name)])
            raise PluginError(
                f"training task {name!r} is provided by both {providers}; uninstall one of them"
            )
        raise PluginError(
            f"no training task is named {name!r}; "
            f"{suggestion(name, self.training_task_names(), 'training tasks')} (see `v2a plugins`)"
        )

    def config_for(self, kind: str, name: str, options: Mapping[str, Any] | None = None) -> Any:
        """The plug-in's config instance for ``options`` (plain data), validated by its schema."""
        spec = self.get(kind, name).spec
        options = dict(options or {})
        if spec.config is None:
            if options:
                raise PluginError(f"{kind} {name!r} takes no options, got {', '.join(options)}")
            return None
        try:
            return validate(options, spec.config)
        except SchemaError as exc:
            raise PluginError(f"{kind} {name!r} option {exc}") from None

    def properties(self, kind: str, name: str, config: Any = None) -> dict[str, Any]:
        """The attributes ``kind``/``name`` declares it will have when built from ``config`` (a
        validated config instance, see :meth:`config_for`; without it the plug-in's defaults),
        computed without building it: see :attr:`ComponentSpec.properties`. Empty when the
        plug-in declares nothing."""
        spec = self.get(kind, name).spec
        if spec.properties is None:
            return {}
        if config is None and spec.config is not None:
            config = spec.config()
        return dict(spec.properties(config))

    def build(self, kind: str, name: str, config: Any = None) -> Component:
        """Build a component from a validated config instance (see :meth:`config_for`).

        Without ``config`` the plug-in's defaults are used.
        """
        entry = self.get(kind, name)
        missing = entry.spec.missing_requirements()
        if missing:
            how = f": {entry.spec.install}" if entry.spec.install else ""
            raise PluginError(
                f"{kind} {name!r} needs {', '.join(missing)}, which is not installed{how}"
            )
        if config is None and entry.spec.config is not None:
            config = entry.spec.config()
        try:
            component = entry.spec.build(config)
        except (Exception, KeyboardInterrupt):
            raise  # a bug in the plug-in keeps its traceback
        except BaseException as exc:  # sys.exit() in a plug-in must not end the command silently
            raise PluginError(
                f"{kind} {name!r} from {entry.plugin.label} is broken: building it "
                f"{describe_failure(exc, verb=True)}; report this to its provider"
            ) from None
        from v2a.interfaces import KINDS  # deferred: torch (listing plug-ins needs none)
        if not isinstance(component, KINDS[kind]):
            raise TypeError(
                f"{kind} {name!r} from {entry.plugin.label} built a {type(component).__name__}, "
                f"which does not implement {KINDS[kind].__name__}"
            )
        return component

    def build_from(self, kind: str, options: Mapping[str, Any] | str) -> Component:
        """Build a component from ``{plugin: name, ...options}`` (or a bare plug-in name)."""
        name, config = self._named_config(kind, options)
        return self.build(kind, name, config)

    def properties_from(self, kind: str, options: Mapping[str, Any] | str) -> dict[str, Any]:
        """:meth:`properties` of the component :meth:`build_from` would build from ``options``."""
        name, config = self._named_config(kind, options)
        return self.properties(kind, name, config)

    def _named_config(self, kind: str, options: Mapping[str, Any] | str) -> tuple[str, Any]:
        """The plug-in name and validated config of ``{plugin: name, ...options}``."""
        options = {"plugin": options} if isinstance(options, str) else dict(options)
        name = options.pop("plugin", None)
        if not isinstance(name, str):
            raise PluginError(f"a {kind} needs `plugin: <name>` (see `v2a plugins`)")
        return name, self.config_for(kind, name, options)

    def rows(self) -> Iterable[dict[str, str]]:
        """One row per component (and per failed plug-in) for ``v2a plugins``."""
        for (kind, name), entry in sorted(self.entries.items()):
            yield {"kind": kind, "name": name, "provider": entry.plugin.provider,
                   "version": entry.plugin.version, "plugin": entry.plugin.name,
                   "status": entry.status, "description": entry.spec.description}
        for name, task in sorted(self.training_tasks.items()):
            yield {"kind": TRAINING_TASK, "name": name, "provider": task.plugin.provider,
                   "version": task.plugin.version, "plugin": task.plugin.name, "status": "ok",
                   "description": task.spec.description}
        for (kind, name), infos in sorted(self.conflicts.items()):
            for info in infos:
                yield {"kind": kind, "name": name, "provider": info.provider,
                       "version": info.version, "plugin": info.name,
                       "status": "conflict: name claimed by "
                       + " and ".join(i.provider for i in infos),
                       "description": ""}
        for info in sorted(self.plugins.values(), key=lambda i: i.name):
            if info.error:
                yield {"kind": "-", "name": info.name, "provider": info.provider,
                       "version": info.version, "plugin": info.name, "status": info.error,
                       "description": ""}


def distribution_of(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    """The name and version of the distribution that provides ``ep`` (``?`` when unknown)."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return _name_and_version(dist)


@lru_cache(maxsize=64)
def _name_and_version(dist: importlib.metadata.Distribution) -> tuple[str, str]:
    """``dist``'s name and version, its metadata file parsed once (the entry points of one
    distribution share its object; each metadata read parses the whole file)."""
    metadata = dist.metadata
    return metadata["Name"], metadata["Version"]


def plugin_names(eps: Iterable[importlib.metadata.EntryPoint]) -> list[str]:
    """The name each entry point's plug-in is registered under: the entry point's name, or
    ``<distribution>:<name>`` where several distributions have an entry point of that name."""
    eps = list(eps)
    providers: dict[str, set[str]] = {}
    for ep in eps:
        providers.setdefault(ep.name, set()).add(distribution_of(ep)[0])
    return [f"{distribution_of(ep)[0]}:{ep.name}" if len(providers[ep.name]) > 1 else ep.name
            for ep in eps]


def describe_failure(exc: BaseException, *, verb: bool = False) -> str:
    """What plug-in code did instead of returning: ``ValueError: bad`` or ``it called
    sys.exit(3)`` (``called sys.exit(3)`` / ``raised ValueError: bad`` with ``verb``)."""
    if isinstance(exc, SystemExit):
        what = f"called sys.exit({exc.code!r})" if exc.code is not None else "called sys.exit()"
        return what if verb else f"it {what}"
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"raised {what}" if verb else what


#: A registry to use in place of the installed plug-ins' (what :func:`default_registry` returns
#: when set): for tests, and for applications that assemble their own.
override: Registry | None = None


def default_registry() -> Registry:
    """The registry of the installed plug-ins (loaded once per process), or :data:`override`
    when it is set."""
    return override if override is not None else installed_registry()


@lru_cache(maxsize=1)
def installed_registry() -> Registry:
    """The installed plug-ins' registry, loaded once per process."""
    return Registry.from_environment()
