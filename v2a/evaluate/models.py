"""The models an evaluation computes its metrics with, and which weights they get.

A metric's model is the recipe's component when the recipe has one of that plug-in in the slot
that kind lives in (the audio encoder of ``--recipe``, its reranker, its visual stream), else
the registered plug-in with its defaults; ``--model PLUGIN.KEY=VALUE`` sets an option of a
model either way (``--model panns_cnn14.weights=Cnn14_mAP=0.431.pth``).

A model that would run with random weights (its ``weights`` option is ``none``) while the
published ones exist is not run: its metrics are listed as skipped, saying how to give the
weights, unless ``--random-weights`` asks for random init (for tests and smoke runs; such a
number says that the pipeline runs, nothing about the audio). A model the recipe provides runs
as the recipe says: the recipe is the user's own choice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from v2a.evaluate.options import Options
from v2a.recipe import ComponentChoice, Recipe
from v2a.registry import Registry
from v2a.weights import is_random

#: The recipe slot a model of each kind is taken from, when the recipe has that plug-in there.
RECIPE_SLOTS = {"audio_encoder": "audio_encoder", "reranker": "reranker"}
#: Audio encoders never taken from the recipe: FDM compares log-mel frames across recipes.
ALWAYS_DEFAULT = {"mel"}


@dataclass(frozen=True)
class ModelChoice:
    """A model's recipe choice, and whether it came from the recipe (as the recipe says) or
    from the plug-in's defaults and ``--model``."""

    choice: ComponentChoice
    from_recipe: bool


def recipe_component(kind: str, plugin: str, recipe: Recipe | None) -> ComponentChoice | None:
    """The recipe's component of plug-in ``plugin`` in the slot ``kind`` lives in, if any."""
    if recipe is None or plugin in ALWAYS_DEFAULT:
        return None
    if kind == "visual_encoder":
        slot = f"visual_encoders.{plugin}"
        return recipe.choice(slot) if recipe.has(slot) else None
    slot = RECIPE_SLOTS.get(kind)
    if slot is not None and recipe.has(slot) and recipe.choice(slot).plugin == plugin:
        return recipe.choice(slot)
    return None


def option_names(kind: str, plugin: str, registry: Registry) -> set[str]:
    """The option names the plug-in ``plugin`` of ``kind`` takes."""
    config = registry.get(kind, plugin).spec.config
    return {f.name for f in dataclasses.fields(config)} if config is not None else set()


def options_for(kind: str, plugin: str, options: Options, registry: Registry) -> dict[str, Any]:
    """The ``--model`` options of ``plugin`` that go to its ``kind``: all of them, except that
    where plug-ins of two kinds share the name (``imagebind``'s audio and vision towers) a key
    only the other kind takes goes to that one alone (``--model imagebind.weights=FILE`` reaches
    both, ``--model imagebind.crops=3`` the vision tower)."""
    given = options.models.get(plugin, {})
    others = [k for k in registry.kinds_of(plugin) if k != kind] if given else []
    if not others:
        return given
    own = option_names(kind, plugin, registry)
    theirs = set().union(*(option_names(k, plugin, registry) for k in others))
    return {key: value for key, value in given.items() if key in own or key not in theirs}


def model_choice(kind: str, plugin: str, *, registry: Registry, options: Options,
                 recipe: Recipe | None, base: dict[str, Any] | None = None) -> ModelChoice:
    """The choice that builds the model ``plugin`` of ``kind`` (see the module docstring);
    ``base``: options of the defaults' choice (``codec_latents``' codec, say)."""
    given = options_for(kind, plugin, options, registry)
    own = recipe_component(kind, plugin, recipe)
    if own is not None and not given:
        return ModelChoice(own, from_recipe=True)
    merged = {**(own.options if own is not None else base or {}), **given}
    config = registry.config_for(kind, plugin, merged)
    if options.recipe_options.get("random_weights") and hasattr(config, "weights"):
        merged["weights"] = "none"  # as --random-weights does to a recipe: nothing is downloaded
        config = registry.config_for(kind, plugin, merged)
    choice = ComponentChoice(kind=kind, plugin=plugin, options=merged, config=config)
    return ModelChoice(choice, from_recipe=own is not None)


def untrained_reason(label: str, model: ModelChoice, options: Options) -> str | None:
    """Why a metric is skipped because its model would have random weights (see the module
    docstring), or None when it may run."""
    weights = model.choice.as_data().get("weights")
    if model.from_recipe or not isinstance(weights, str) or not is_random(weights):
        return None
    if options.recipe_options.get("random_weights"):
        return None
    plugin = model.choice.plugin
    return (f"{label} skipped: {plugin} has no weights; give its published checkpoint with "
            f"--model {plugin}.weights=FILE (--model {plugin}.weights=pretrained downloads it, or "
            f"says where to get it), or pass --random-weights to compute it with random init")


def visual_model_choice(plugin: str, *, registry: Registry, options: Options,
                        recipe: Recipe | None) -> ModelChoice:
    """The choice that builds the visual encoder ``plugin`` a semantic metric reads: the
    recipe's stream ``visual_encoders.<plugin>`` only when that stream is this plug-in (a stream
    of another plug-in under that name is not the metric's model), else the plug-in's defaults
    and ``--model``."""
    own = recipe_component("visual_encoder", plugin, recipe)
    if own is not None and own.plugin != plugin:
        recipe = None
    return model_choice("visual_encoder", plugin, registry=registry, options=options,
                        recipe=recipe)
