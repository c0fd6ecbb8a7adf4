"""Where the training clips come from: the recipe's feature cache, or clips decoded on the fly,
and the batches of a DataLoader with the sentences of the user errors its workers raise."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from v2a.datasets import CachedClips, LiveClips
from v2a.errors import RecipeError, UserError
from v2a.manifests import cache_dir_of
from v2a.recipe import Recipe


def open_split(recipe: Recipe, split: str) -> CachedClips | LiveClips:
    """The clips of ``split``: from the feature cache when the recipe names one (or one exists
    beside the manifest), else decoded on the fly from the manifest."""
    if not (recipe.data.cache or recipe.data.manifest):
        raise RecipeError(
            f"{recipe.source}: the recipe names no data; set data.cache (written by `v2a extract`) "
            "or data.manifest (clips decoded while training)"
        )
    cache = cache_dir_of(recipe)
    if recipe.data.cache or cache.is_dir():
        return CachedClips(cache, recipe, split)
    return LiveClips(None, recipe, split)


def worker_errors(batches) -> Iterator[Any]:
    """The batches of a DataLoader, with a :class:`~v2a.errors.UserError` raised in one of its
    worker processes given back its own sentence: the DataLoader re-raises it in this process
    with the worker's whole traceback as its message ("Caught CacheError in DataLoader worker
    process 0. Original Traceback ..."), which would reach the user as a traceback."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except UserError as exc:
            raise own_sentence(exc) from None
        yield batch


def own_sentence(exc: UserError) -> UserError:
    """``exc`` as raised in the worker (see :func:`worker_errors`), or ``exc`` itself when it
    was not re-raised from a worker."""
    text = str(exc)
    if not (text.startswith("Caught ") and "\nOriginal Traceback" in text):
        return exc
    last = text.rstrip().rsplit("\n", 1)[-1]  # "v2a.cache.CacheError: the shard ..."
    name = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return type(exc)(last[len(name):] if last.startswith(name) else last)
