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
checked against the section schemas (:mod:`~v2a.recipe.config`) and each plug-in's config
dataclass, then :func:`~v2a.recipe.consistency.check_consistency` checks that the components fit
together. A recipe can only reach code through registered plug-in names; YAML is read with the
safe loader, so no tag can import or run anything, and a file or override larger or deeper than
the limits (:data:`MAX_BYTES`, :data:`MAX_VALUES` with YAML aliases counted, :data:`MAX_DEPTH`)
is refused before anything expands it.

The package, bottom to top (a module imports only those listed before it):

* :mod:`~v2a.recipe.config`: the section schemas, the slots, :class:`ComponentChoice`,
  :class:`Recipe`, :func:`build_frozen` and :func:`untrained`;
* :mod:`~v2a.recipe.files`: YAML within the limits, finding recipes, the shipped catalogue;
* :mod:`~v2a.recipe.saved`: a recipe compared with a training run's saved one;
* :mod:`~v2a.recipe.compose`: ``extends``, component files and overrides merged, with the
  source of every key;
* :mod:`~v2a.recipe.consistency`: whether the validated components fit together;
* :mod:`~v2a.recipe.validation`: interpolations resolved, every unit validated;
* :mod:`~v2a.recipe.load`: :func:`load_recipe`, the way in.

This package is the recipe API: the names below are imported from ``v2a.recipe``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from v2a.lazy import home_of, lazy_exports

from v2a.recipe.files import (
    ALLOW_ENV_VARIABLE,
    MAX_BYTES,
    MAX_DEPTH,
    MAX_VALUES,
    MODEL_RECIPE,
    CatalogueEntry,
    YAMLLimitError,
    builtin_recipe_names,
    builtin_recipes_dir,
    catalogue,
    display,
    load_yaml,
    locate,
    read_yaml,
    recipes_extending,
    shipped_recipes,
)
from v2a.recipe.saved import ABSENT, flat_keys, read_saved_recipe, recipe_differences

#: The names of the modules that validate recipes (with the registry and the weights'
#: downloads), imported on first use (PEP 562 ``__getattr__``) so that reading recipe files
#: (``v2a recipe list``, the command line's parser) imports none of them. None of them imports
#: torch either: only building a component, or comparing a trained weights file with its model
#: on the meta device, does (tests/test_startup.py).
_HOMES = {
    "v2a.recipe.compose": ("Composer", "is_override", "override_source", "slot_kind"),
    "v2a.recipe.config": ("BUILD_SEED", "MODEL_SLOTS", "MULTI_SLOTS", "SECTIONS", "SLOTS",
                          "TOP_KEYS", "ComponentChoice", "DataConfig", "Precision", "Recipe",
                          "RecipeDumper", "SamplingConfig", "TrainingConfig", "build_frozen",
                          "untrained", "untrained_recipe"),
    "v2a.recipe.consistency": ("Inconsistency", "check_consistency", "inconsistencies",
                               "weights_fit"),
    "v2a.recipe.load": ("load_recipe", "recipe_file", "recipe_options", "require_runnable"),
    "v2a.recipe.reference": ("OptionDoc", "dataclass_doc", "field_docs", "yaml_value"),
    "v2a.recipe.validation": ("validate_component", "validate_recipe"),
}
_HOME_OF = home_of(_HOMES)


if TYPE_CHECKING:  # the same names, for type checkers (tests/test_startup.py keeps them equal)
    from v2a.recipe.compose import Composer, is_override, override_source, slot_kind
    from v2a.recipe.config import (
        BUILD_SEED,
        MODEL_SLOTS,
        MULTI_SLOTS,
        SECTIONS,
        SLOTS,
        TOP_KEYS,
        ComponentChoice,
        DataConfig,
        Precision,
        Recipe,
        RecipeDumper,
        SamplingConfig,
        TrainingConfig,
        build_frozen,
        untrained,
        untrained_recipe,
    )
    from v2a.recipe.consistency import (
        Inconsistency,
        check_consistency,
        inconsistencies,
        weights_fit,
    )
    from v2a.recipe.load import load_recipe, recipe_file, recipe_options, require_runnable
    from v2a.recipe.reference import OptionDoc, dataclass_doc, field_docs, yaml_value
    from v2a.recipe.validation import validate_component, validate_recipe

__all__ = [
    "ABSENT",
    "ALLOW_ENV_VARIABLE",
    "BUILD_SEED",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_VALUES",
    "MODEL_RECIPE",
    "MODEL_SLOTS",
    "MULTI_SLOTS",
    "SECTIONS",
    "SLOTS",
    "TOP_KEYS",
    "CatalogueEntry",
    "ComponentChoice",
    "Composer",
    "DataConfig",
    "Inconsistency",
    "OptionDoc",
    "Precision",
    "Recipe",
    "RecipeDumper",
    "SamplingConfig",
    "TrainingConfig",
    "YAMLLimitError",
    "build_frozen",
    "builtin_recipe_names",
    "builtin_recipes_dir",
    "catalogue",
    "check_consistency",
    "dataclass_doc",
    "display",
    "field_docs",
    "flat_keys",
    "inconsistencies",
    "is_override",
    "load_recipe",
    "load_yaml",
    "locate",
    "override_source",
    "read_saved_recipe",
    "read_yaml",
    "recipe_differences",
    "recipe_file",
    "recipe_options",
    "recipes_extending",
    "require_runnable",
    "shipped_recipes",
    "slot_kind",
    "untrained",
    "untrained_recipe",
    "validate_component",
    "validate_recipe",
    "weights_fit",
    "yaml_value",
]

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
