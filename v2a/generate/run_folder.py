"""A training run folder as generation uses it: its fuser and generator weights, and the check
that its ``recipe.yaml`` agrees with the recipe on what those weights mean."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from v2a.cache import file_digest
from v2a.generate.errors import GenerationError
from v2a.log import warn as log_warn
from v2a.recipe import Recipe, read_saved_recipe, recipe_differences
from v2a.tasks import exported_file_names, exported_weights
from v2a.weights import NONE, PRETRAINED, load_checkpoint, load_into

#: The recipe sections that decide what a training run's fuser and generator weights mean.
WEIGHT_SECTIONS = ("codec", "visual_encoders", "fuser", "generator")

#: The recipe slots whose weights generation takes from a training run folder.
RUN_SLOTS = ("fuser", "generator")


def run_weights(run: Path) -> dict[str, Path]:
    """The weights file of each of :data:`RUN_SLOTS` in the training run folder ``run``, by the
    names the registered training tasks export them as (:func:`v2a.tasks.exported_weights`);
    refuses, in one sentence, a ``run`` that is not a folder or lacks one of them."""
    if not run.is_dir():
        expected = " and ".join(" or ".join(exported_file_names(slot)) for slot in RUN_SLOTS)
        raise GenerationError(f"the checkpoint {run} is not a training run folder (it should "
                              f"hold {expected})")
    found = {}
    for slot in RUN_SLOTS:
        path = exported_weights(run, slot)
        if path is None:
            names = " or ".join(exported_file_names(slot)) or f"{slot} weights"
            raise GenerationError(f"the checkpoint {run} has no {names}; is it a finished "
                                  f"generator training run?")
        found[slot] = path
    return found


def load_run_weights(modules: dict[str, torch.nn.Module], files: dict[str, Path]) -> None:
    """Load each weights file of ``files`` (slot → path, :func:`run_weights`) into the module of
    its slot, strictly (:func:`v2a.weights.load_into`)."""
    for slot, path in files.items():
        load_into(modules[slot], load_checkpoint(path), path, slot)


def check_run_recipe(run: Path, recipe: Recipe, warn: Callable[[str], None] | None = None) -> None:
    """Refuse the training run folder ``run`` when its ``recipe.yaml`` differs from ``recipe`` in
    :data:`WEIGHT_SECTIONS`, in one sentence naming up to three differing keys and suggesting
    ``--recipe RUN/recipe.yaml``. ``weights`` options differ only when they name other weights
    (:func:`same_weights`). Without a readable ``recipe.yaml`` it only warns (``warn(text)``,
    default :func:`v2a.log.warn`)."""
    warn = warn or log_warn
    saved = read_saved_recipe(run / "recipe.yaml")
    if saved is None:
        warn(f"{run} has no readable recipe.yaml, so its weights cannot be checked against "
             f"{recipe.source}")
        return
    own = recipe.as_data()
    differ = []
    for key, then, now in recipe_differences({s: saved.get(s) for s in WEIGHT_SECTIONS},
                                             {s: own.get(s) for s in WEIGHT_SECTIONS},
                                             ignore=("fuser.weights", "generator.weights")):
        if key.rpartition(".")[2] == "weights" and isinstance(then, str) and isinstance(now, str):
            same = same_weights(then, now)
            if same is None:
                warn(f"cannot tell whether {key} {then!r} of {run} and {now!r} of the recipe are "
                     f"the same weights (a file is missing here)")
            if same is not False:
                continue
        differ.append(f"{key}: {then!r} in the run, {now!r} in the recipe")
    if differ:
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise GenerationError(
            f"the checkpoint {run} was trained with another recipe ({', '.join(differ[:3])}{more}); "
            f"generate with --recipe {run / 'recipe.yaml'}")


def same_weights(a: str, b: str) -> bool | None:
    """Whether two ``weights`` options name the same weights: the same keyword (``none``,
    ``pretrained``), or local files at the same place or with the same content; None when it
    cannot be told (a file is missing here)."""
    if a.lower() in (NONE, PRETRAINED) or b.lower() in (NONE, PRETRAINED):
        return a.lower() == b.lower()
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.resolve() == pb.resolve():
        return True
    if not (pa.is_file() and pb.is_file()):
        return None
    return file_digest(pa) == file_digest(pb)
