"""Training tasks: what ``v2a train`` trains, the interface a plug-in implements to add one, and
the files a training run exports.

A recipe names its task with ``training.task: <name>``; the name is looked up in the registry
(:meth:`v2a.registry.Registry.training_task`), where plug-ins put :class:`~v2a.registry.TrainingTaskSpec`
objects through the hook :func:`v2a.hookspecs.v2a_register_training_tasks`. The core registers
its own ``generator`` task (:mod:`v2a.generator_task`) the same way; others come with
the plug-ins whose components they train.

The spec declares, without building anything, which recipe slots the task trains and the file
each slot's weights are exported as (``exports``); :func:`exported_weights` finds those files in
a run folder. The task itself is a :class:`TrainingTask` (:mod:`v2a.interfaces` defines it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from v2a.errors import PluginError, RecipeError, UserError
from v2a.lazy import home_of, lazy_exports
from v2a.registry import Registry, TrainingTaskSpec, default_registry

if TYPE_CHECKING:  # with the lazy names below (tests/test_startup.py keeps them equal)
    from torch import Tensor, nn

    from v2a.interfaces import EXPORT_DTYPES, TrainingTask
    from v2a.recipe import Recipe

#: The interface and the export dtypes live with the component interfaces (they need torch);
#: ``from v2a.tasks import TrainingTask`` imports them on first use, so that looking a task up
#: (``v2a recipe check``) imports no torch.
_HOMES = {"v2a.interfaces": ("EXPORT_DTYPES", "TrainingTask")}
_HOME_OF = home_of(_HOMES)
__all__ = ["EXPORT_DTYPES", "TrainingError", "TrainingTask", "build_task", "checked_exports",
           "exported_file_names", "exported_weights", "task_spec", "trained_state"]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)


class TrainingError(UserError):
    """A run that cannot start or continue: a bad output folder, a checkpoint of another
    recipe, data that do not fit the task, a loss that diverged."""


def trained_state(task: nn.Module) -> dict[str, Tensor]:
    """The task's state dict without its frozen sub-modules (what a checkpoint holds)."""
    frozen = {id(m) for m in task.frozen}
    skip = tuple(f"{name}." for name, m in task.named_modules() if id(m) in frozen and name)
    return {k: v for k, v in task.state_dict().items() if not k.startswith(skip)}


def task_spec(recipe: Recipe, registry: Registry | None = None) -> TrainingTaskSpec:
    """The registered task the recipe's ``training.task`` names, or a :class:`RecipeError` in
    one sentence (with "did you mean" for a misspelt name)."""
    try:
        return (registry or default_registry()).training_task(recipe.training.task)
    except PluginError as exc:
        raise RecipeError(f"{recipe.source}: training.task: {exc}") from None


def build_task(recipe: Recipe, registry: Registry | None = None) -> TrainingTask:
    """The training task of ``recipe`` (``training.task``), built from the recipe."""
    from v2a.interfaces import TrainingTask  # deferred: torch (the interface)
    spec = task_spec(recipe, registry)
    task = spec.build(recipe)
    if not isinstance(task, TrainingTask):
        raise TypeError(f"training task {spec.name!r} built a {type(task).__name__}, which is not "
                        "a v2a.tasks.TrainingTask")
    return task


def checked_exports(spec: TrainingTaskSpec, task: TrainingTask) -> Mapping[str, nn.Module]:
    """``task.exports()``, checked against what ``spec`` declares: every ``exports`` slot, and
    ``optional_exports`` slots only (a mismatch is a bug of the task's plug-in)."""
    modules = task.exports()
    if not set(spec.exports) <= set(modules) <= set(spec.export_files):
        raise TypeError(f"training task {spec.name!r} exports {sorted(modules)}, but its spec "
                        f"declares {sorted(spec.exports)} (and may add "
                        f"{sorted(spec.optional_exports)})")
    return modules


def exported_file_names(slot: str) -> list[str]:
    """The file names the registered training tasks export the recipe slot ``slot`` as (for a
    message about a run folder that holds none of them)."""
    registry = default_registry()
    names = (registry.training_task(t).export_files.get(slot)
             for t in registry.training_task_names())
    return sorted({name for name in names if name is not None})


def exported_weights(run: Path, slot: str) -> Path | None:
    """The weights file the training run folder ``run`` holds for the recipe slot ``slot``
    (``fuser``, ``generator``, ``reranker``, ...): the first of the registered tasks' declared
    export files for that slot that exists there; ``None`` when there is none."""
    for name in exported_file_names(slot):
        path = Path(run) / name
        if path.is_file():
            return path
    return None
