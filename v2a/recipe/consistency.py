"""Whether a recipe's components fit together, found out before anything heavy runs.

:func:`check_consistency` runs at the end of recipe validation (so ``v2a recipe check``, ``v2a
train`` and ``v2a generate`` refuse the same recipes, in one sentence, before any model is
built or downloaded). It reads what each plug-in *declares* its component will be
(:attr:`v2a.registry.ComponentSpec.properties`: widths, codebooks, which conditioning a fuser
provides and a generator reads, ...), computed from the validated options alone, and compares:

* the fuser's streams with the visual encoders: each one it reads exists and is as wide as the
  fuser expects;
* the visual streams with their readers: a stream that neither the fuser nor the reranker
  reads would be extracted for nothing (and most likely is a typo);
* the generator with the codec (codebooks and their size) and the fuser (conditioning width,
  aligned and context parts);
* the reranker's stream with the visual encoders;
* the fuser's text inputs with the text encoder: a fuser that accepts text needs one, a text
  encoder needs a fuser that accepts text, and the fuser's ``text_dim`` / ``text_pooled_dim``
  options are the encoder's ``dim`` / ``pooled_dim``;
* ``sampling.steps`` with the generator's codebooks;
* a trained ``.safetensors`` weights file with the model the options now describe: only the
  file's header is read, and the model is built on PyTorch's meta device (no memory, no
  weights), for the plug-ins whose weights file is their own state dict
  (:attr:`~v2a.registry.ComponentSpec.state_dict_weights`).

Only what both sides declare is compared: a partial recipe (no fuser, say) or a plug-in that
declares nothing passes where there is nothing to compare. Every message names the key to set
and the value it needs. Comparing declared properties imports no torch; torch and safetensors
are imported only where a model is built on the meta device (a trained weights file to compare,
a plug-in that declares nothing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from v2a.errors import RecipeError, UserError
from v2a.recipe.config import ComponentChoice, Recipe, untrained
from v2a.recipe.files import display
from v2a.registry import Registry
from v2a.weights import NONE, PRETRAINED, cached_file, is_random

#: A problem found: the dotted key to set, and the sentence that says why and to what.
Inconsistency = tuple[str, str]


def check_consistency(recipe: Recipe, source_of: Callable[[str], str], registry: Registry, *,
                      weights: bool = True) -> None:
    """Raise :class:`~v2a.errors.RecipeError` ``"{source}: {key}: {message}"`` for the first
    inconsistency of :func:`inconsistencies`; ``source_of(key)`` names the file (or command-line
    override) that set ``key``. Builds nothing but, for a trained weights file, a model on the
    meta device (with ``weights``: :func:`weights_fit`)."""
    for key, message in inconsistencies(recipe, registry, weights=weights):
        raise RecipeError(f"{source_of(key)}: {key}: {message}")


def inconsistencies(recipe: Recipe, registry: Registry, *,
                    weights: bool = True) -> Iterator[Inconsistency]:
    """Every inconsistency of ``recipe``, the cheap comparisons of declared properties first and
    the weights files last (lazily: a caller that stops at the first never reads a file)."""
    check = _Comparison(recipe, registry)
    yield from check.fuser_streams()
    yield from check.unread_streams()
    yield from check.generator_fit()
    yield from check.reranker_streams()
    yield from check.text_fit()
    yield from check.sampling_steps()
    if weights:
        yield from weights_fit(recipe, registry)


# -- declared properties --------------------------------------------------------------------------


def declared(choice: ComponentChoice, registry: Registry) -> dict[str, Any]:
    """What the plug-in of ``choice`` declares (empty when its declaration needs something the
    user must fix first, which building it will then report). A plug-in that declares nothing
    (``ComponentSpec.properties`` is None, as a third-party one may) is built on the meta device
    instead and its interface attributes read (:func:`built_properties`)."""
    try:
        if registry.get(choice.kind, choice.plugin).spec.properties is None:
            return built_properties(choice, registry)
        return registry.properties(choice.kind, choice.plugin, choice.config)
    except UserError:  # e.g. a nested component the default registry does not know
        return {}


def built_properties(choice: ComponentChoice, registry: Registry) -> dict[str, Any]:
    """The interface attributes (``dim``, ``n_codebooks``, ...) of ``choice`` built with random
    weights on the meta device: no memory, nothing read or downloaded; empty when the plug-in
    cannot be built there."""
    from v2a.interfaces import KINDS  # deferred: torch (the interfaces), for building only
    from v2a.meta_device import build_on_meta  # deferred: torch (building on the meta device)
    bare = untrained(choice)
    module = build_on_meta(lambda: registry.build(bare.kind, bare.plugin, bare.config))
    if module is None:
        return {}
    names = [n for n in vars(KINDS[choice.kind]).get("__annotations__", {}) if n != "kind"]
    return {name: getattr(module, name) for name in names if hasattr(module, name)}


def option_key(choice: ComponentChoice | None, slot: str, option: str, *below: str) -> str:
    """``slot.option[.below...]`` when the plug-in has that option, else ``slot`` itself."""
    config = choice.config if choice is not None else None
    if config is None or not any(f.name == option for f in dataclasses.fields(config)):
        return slot
    return ".".join((slot, option, *below))


def trained_weights(choice: ComponentChoice | None) -> bool:
    """Whether the component loads trained weights (its ``weights`` option names a file)."""
    weights = getattr(choice.config, "weights", None) if choice is not None else None
    return isinstance(weights, str) and not is_random(weights) and weights.lower() != PRETRAINED


class _Comparison:
    """The declared properties of a recipe's components, and the comparisons between them."""

    def __init__(self, recipe: Recipe, registry: Registry):
        self.recipe = recipe
        self.choices = dict(recipe.all_components())
        self.props = {slot: declared(choice, registry) for slot, choice in self.choices.items()}
        self.encoders = {  # stream name -> what its visual encoder declares
            name: self.props[f"visual_encoders.{name}"] for name in recipe.visual_streams
        }

    def label(self, slot: str) -> str:
        return f"{slot} ({self.choices[slot].plugin})"

    def of(self, slot: str) -> dict[str, Any]:
        return self.props.get(slot, {})

    def key(self, slot: str, option: str, *below: str) -> str:
        return option_key(self.choices.get(slot), slot, option, *below)

    def set_to(self, key: str, slot: str, value: Any, what: str) -> str:
        """The fix: ``set key=value``, or in words when the plug-in has no such option."""
        if key != slot:
            return f"set {key}={_yaml(value)}"
        return f"set the option of {self.label(slot)} that gives {what} to {_yaml(value)}"

    def retrain(self, slot: str) -> str:
        if not trained_weights(self.choices.get(slot)):
            return ""
        return f" (and train anew: {self.key(slot, 'weights')}=none)"

    # -- visual streams ---------------------------------------------------------------------

    def fuser_streams(self) -> Iterator[Inconsistency]:
        """Each stream the fuser reads exists, as wide as the fuser reads it."""
        streams = self.of("fuser").get("stream_dims")
        for name, width in (streams or {}).items():
            key = self.key("fuser", "streams", name)
            if name not in self.encoders:
                have = ", ".join(self.encoders) or "none"
                yield key, (
                    f"the fuser reads a visual stream {name!r} ({width} wide), but the recipe's "
                    f"visual encoders are: {have}; add one with visual_encoders.{name}=<plugin>, "
                    f"or stop the fuser reading it with ~{key}"
                )
                continue
            dim = self.encoders[name].get("dim")
            if dim is not None and dim != width:
                fix = self.set_to(key, "fuser", dim, f"the width of stream {name!r}")
                yield key, (
                    f"is {width} but {self.label(f'visual_encoders.{name}')} produces {dim}-wide "
                    f"features; {fix}{self.retrain('fuser')}"
                )

    def unread_streams(self) -> Iterator[Inconsistency]:
        """Every visual stream is read by the fuser or the reranker (known only when the recipe
        has a fuser that declares its streams, and a reranker, if any, that declares its own)."""
        fused = self.of("fuser").get("stream_dims")
        if fused is None:
            return
        reranked = self.of("reranker").get("video_streams") if self.recipe.has("reranker") else {}
        if reranked is None:
            return
        for name, props in self.encoders.items():
            if name in fused or name in reranked:
                continue
            width = props.get("dim", "<dim>")
            yield f"visual_encoders.{name}", (
                f"the stream is extracted ({self.choices[f'visual_encoders.{name}'].plugin}), but "
                f"neither the fuser nor the reranker reads it; add it to the fuser with "
                f"fuser.streams.{name}={width}, or drop it with visual_encoders.{name}=null"
            )

    def reranker_streams(self) -> Iterator[Inconsistency]:
        """The streams the reranker reads exist, as wide as it reads them."""
        streams = self.of("reranker").get("video_streams")
        for name, width in (streams or {}).items():
            if name not in self.encoders:
                have = ", ".join(self.encoders) or "none"
                key = self.key("reranker", "video_stream")
                yield key, (
                    f"the reranker reads the visual stream {name!r}, but the recipe's visual "
                    f"encoders are: {have}; "
                    + (f"set {key} to one of those" if key != "reranker" else "make it read one")
                    + f", or add visual_encoders.{name}=<plugin>"
                )
                continue
            dim = self.encoders[name].get("dim")
            if dim is not None and dim != width:
                key = self.key("reranker", "video_dim")
                fix = self.set_to(key, "reranker", dim, f"the width of stream {name!r}")
                yield key, (
                    f"is {width} but {self.label(f'visual_encoders.{name}')} produces {dim}-wide "
                    f"features; {fix}{self.retrain('reranker')}"
                )

    # -- generator --------------------------------------------------------------------------

    def generator_fit(self) -> Iterator[Inconsistency]:
        """The generator's codes are the codec's, its conditioning the fuser's."""
        generator, fuser = self.of("generator"), self.of("fuser")
        # (generator attribute, the slot it must match, that slot's attribute, how to say it)
        matches = (
            ("n_codebooks", "codec", "n_codebooks", "the codec ({plugin}) has {value} codebooks"),
            ("codebook_size", "codec", "codebook_size",
             "the codec's ({plugin}) codebooks have {value} entries"),
            ("condition_dim", "fuser", "dim",
             "the fuser ({plugin}) produces {value}-wide conditioning"),
        )
        for name, slot, attribute, says in matches:
            ours, theirs = generator.get(name), self.of(slot).get(attribute)
            if ours is None or theirs is None or ours == theirs:
                continue
            key = self.key("generator", name)
            fix = self.set_to(key, "generator", theirs, name)
            other = says.format(plugin=self.choices[slot].plugin, value=theirs)
            yield key, f"is {ours} but {other}; {fix}{self.retrain('generator')}"
        for part in ("aligned", "context"):
            uses, provides = generator.get(f"uses_{part}"), fuser.get(f"provides_{part}")
            if uses and provides is False:
                key = self.key("fuser", part)
                fix = self.set_to(key, "fuser", True, f"the {part} conditioning")
                yield key, (
                    f"the fuser ({self.choices['fuser'].plugin}) provides no {part} conditioning, "
                    f"but the generator ({self.choices['generator'].plugin}) reads it; {fix}"
                    f"{self.retrain('fuser')}"
                )

    def text_fit(self) -> Iterator[Inconsistency]:
        """A fuser that accepts text has a text encoder, and the reverse, as wide as it reads."""
        accepts = self.of("fuser").get("accepts_text") if self.recipe.has("fuser") else None
        has_encoder = self.recipe.has("text_encoder")
        if accepts and not has_encoder:
            yield "text_encoder", (
                f"the fuser ({self.choices['fuser'].plugin}) reads a text, but the recipe has no "
                f"text_encoder; add one (text_encoder.plugin=learned_words, say) or take the "
                f"fuser's text options out")
        if has_encoder and accepts is False:
            yield self.key("fuser", "text_dim"), (
                f"the recipe has a text_encoder ({self.choices['text_encoder'].plugin}), but the "
                f"fuser ({self.choices['fuser'].plugin}) takes no text; give the fuser the "
                f"encoder's widths (text_dim and text_pooled_dim) or remove the text_encoder")
        if not (accepts and has_encoder):
            return
        encoder, config = self.of("text_encoder"), self.choices["fuser"].config
        for option, attribute in (("text_dim", "dim"), ("text_pooled_dim", "pooled_dim")):
            ours, theirs = getattr(config, option, None), encoder.get(attribute)
            if ours is None or theirs is None or ours == theirs:
                continue
            key = self.key("fuser", option)
            fix = self.set_to(key, "fuser", theirs, f"the text encoder's {attribute}")
            yield key, (f"is {ours} but the text encoder ({self.choices['text_encoder'].plugin}) "
                        f"has {attribute} {theirs}; {fix}{self.retrain('fuser')}")

    def sampling_steps(self) -> Iterator[Inconsistency]:
        """At most one step count per codebook (a shorter list repeats its last count)."""
        levels = self.of("generator").get("n_codebooks")
        steps = list(self.recipe.sampling.steps)
        if levels is not None and len(steps) > levels:
            yield "sampling.steps", (
                f"has {len(steps)} step counts but the generator decodes {levels} "
                f"codebook{'' if levels == 1 else 's'}; set "
                f"sampling.steps={_yaml(steps[:levels])} (one count per level; a shorter list "
                f"repeats its last count)"
            )


# -- trained weights files ------------------------------------------------------------------------


def weights_fit(recipe: Recipe, registry: Registry) -> Iterator[Inconsistency]:
    """Each ``.safetensors`` weights file of a plug-in with ``state_dict_weights`` holds the
    tensors, of the shapes, that the component built from the recipe's options has.

    Reads the file's header only, and builds the component with ``weights=none`` on the meta
    device. A missing or unreadable file, a config without a ``weights`` field, and a
    component that cannot be built on the meta device are skipped (building it for real
    reports the first two in one sentence).
    """
    for slot, choice in recipe.all_components():
        try:
            spec = registry.get(choice.kind, choice.plugin).spec
        except UserError:
            continue
        if not (spec.state_dict_weights and trained_weights(choice)):
            continue
        try:
            path = cached_file(choice.config.weights)  # a URL's download, when here already
        except UserError:
            continue  # a malformed value: building it says so
        if path is None:
            continue
        found = safetensors_shapes(path)
        expected = meta_shapes(choice, registry)
        if found is None or expected is None:
            continue
        problem = first_difference(found, expected, f"{choice.kind} {choice.plugin} built from "
                                   "these options")
        if problem is not None:
            yield f"{slot}.weights", (
                f"{display(path)} {problem}; set {slot}.weights=none to train anew, or set the "
                f"options back to those it was trained with"
            )


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """``{name: shape}`` of the tensors of a ``.safetensors`` file, from its header alone;
    ``None`` for a missing, unreadable or other kind of file."""
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as file:
            return {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    except Exception:  # not a safetensors file after all: the real load says so
        return None


def meta_shapes(choice: ComponentChoice, registry: Registry) -> dict[str, tuple[int, ...]] | None:
    """``{name: shape}`` of the ``state_dict()`` of ``choice`` built with ``weights=none`` on
    the meta device (no memory, nothing loaded), or ``None`` where that build fails."""
    from v2a.meta_device import build_on_meta  # deferred: torch (building on the meta device)
    config = dataclasses.replace(choice.config, weights=NONE)
    module = build_on_meta(lambda: registry.build(choice.kind, choice.plugin, config))
    if module is None:
        return None
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def first_difference(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                     model: str) -> str | None:
    """How a file's tensors (``found``) first differ from those of ``model`` (``expected``), as
    the rest of a sentence whose subject is the file, or ``None`` when they agree."""
    for name, shape in expected.items():
        if name not in found:
            return f"has no tensor {name!r}, which {model} has ({list(shape)})"
        if tuple(found[name]) != tuple(shape):
            return f"holds {name} as {list(found[name])}, but {model} has {list(shape)}"
    for name in sorted(found):
        if name not in expected:
            return f"holds a tensor {name!r}, which {model} does not have"
    return None


# -- helpers --------------------------------------------------------------------------------------


def _yaml(value: Any) -> str:
    """A value as a ``key=value`` override writes it (``true``, ``[4, 2]``, ``165``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)
