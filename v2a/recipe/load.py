"""The way in: :func:`load_recipe` reads, composes, overrides, resolves and validates a recipe
(:mod:`~v2a.recipe.compose`, then :mod:`~v2a.recipe.validation`), building nothing, from a
recipe file, a shipped recipe's name or a model folder (local, or on the Hub:
:func:`recipe_file`); the
command line's flags for it (:func:`recipe_options`); and the refusal of a base recipe where a
command runs a model (:func:`require_runnable`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from v2a.errors import RecipeError
from v2a.hub import hub_snapshot, is_hub_value, parse_hub_ref
from v2a.recipe.compose import Composer
from v2a.recipe.config import MODEL_SLOTS, Recipe
from v2a.recipe.files import (
    ALLOW_ENV_VARIABLE,
    MODEL_RECIPE,
    display,
    locate,
    recipes_extending,
)
from v2a.recipe.validation import validate_recipe
from v2a.registry import Registry, default_registry


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
    (:func:`v2a.recipe.consistency.weights_fit`; it builds models on the meta device, which costs a
    second or two the first time in a process, so ``v2a recipe check`` and ``v2a train`` ask for
    it, while loading the weights reports a misfit in one sentence anyway).
    """
    registry = registry or default_registry()
    path, source, default_name = recipe_file(ref)
    composer = Composer()
    composer.sources[""] = source
    composer.add_file(path)
    for text in overrides:
        composer.add_override(text)
    if allow_env is None:
        allow_env = os.environ.get(ALLOW_ENV_VARIABLE, "").strip().lower() in ("1", "true", "yes")
    return validate_recipe(
        composer, registry, source=source, default_name=default_name, path=path,
        overrides=tuple(overrides), random_weights=random_weights, allow_env=allow_env,
        check_weights=check_weights,
    )


def recipe_file(ref: str | Path) -> tuple[Path, str, str]:
    """The recipe file ``ref`` names, how messages name it and the recipe's default name: a
    model folder's ``recipe.yaml`` (``hf://OWNER/NAME[@REVISION]``, the Hub repository
    downloaded whole into the Hugging Face cache with :func:`v2a.hub.hub_snapshot`; or a local
    folder holding one, as ``v2a export`` writes), so that its ``./`` weights are the files
    beside it; else a recipe file or a shipped recipe's name (:func:`locate`)."""
    text = str(ref)
    if is_hub_value(text):
        hub_ref = parse_hub_ref(text, need_path=False)
        folder, _ = hub_snapshot(hub_ref, what=f"the model {text}")
        path = folder / MODEL_RECIPE
        if not path.is_file():
            raise RecipeError(f"{text} has no {MODEL_RECIPE}, so it is not a v2a model folder; "
                              f"give the repository that v2a push uploaded an export to")
        return path, f"{text} ({MODEL_RECIPE})", hub_ref.repo_id.rpartition("/")[2]
    folder = Path(text)
    if (folder / MODEL_RECIPE).is_file():
        path = folder / MODEL_RECIPE
        return path, display(path), folder.resolve().name
    try:
        path = locate(ref)
    except RecipeError:
        if folder.is_dir():  # (a folder of another kind that shares a recipe's name is not one)
            raise RecipeError(f"the folder {text} has no {MODEL_RECIPE}; give a recipe file, or "
                              f"a model folder that v2a export wrote") from None
        raise
    return path, display(path), path.stem


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
