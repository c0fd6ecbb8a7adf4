"""The core's training task, ``generator``: the recipe's fuser and generator under the masked
objective (:class:`~v2a.objective.MaskedObjective`: masked token prediction, plus the auxiliary
regression of the recipe's audio encoder features and the audio-visual contrastive term).

Registered through the same door as every plug-in (the ``generator_task`` entry point of the
``v2a`` group names this module), so ``v2a plugins`` lists it as ``training_task generator``.
Like a plug-in module it is imported whenever the registry loads (``v2a plugins``, ``v2a
recipe check``), so it is light: it holds the hook, and the task itself
(:class:`~v2a.objective.GeneratorTask`, beside the objective it trains) is imported when a
recipe's task is built. Neither imports the training engine (:mod:`v2a.training`) or the
sampler: the trainer hands ``GeneratorTask.generate`` its sampler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from v2a.hookspecs import hookimpl
from v2a.lazy import home_of, lazy_exports
from v2a.registry import TrainingTaskSpec

if TYPE_CHECKING:  # with the lazy name below (tests/test_startup.py keeps them equal)
    from v2a.objective import GeneratorTask
    from v2a.recipe import Recipe

#: The task lives with the objective it trains (:mod:`v2a.objective`, which needs torch):
#: ``from v2a.generator_task import GeneratorTask`` imports it on first use.
_HOMES = {"v2a.objective": ("GeneratorTask",)}
_HOME_OF = home_of(_HOMES)
__all__ = ["GeneratorTask", "build_generator_task", "v2a_register_training_tasks"]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)


def build_generator_task(recipe: Recipe) -> GeneratorTask:
    """The ``generator`` task of ``recipe`` (:class:`~v2a.objective.GeneratorTask`)."""
    from v2a.objective import GeneratorTask  # deferred: torch (the task and its objective)
    return GeneratorTask(recipe)


@hookimpl
def v2a_register_training_tasks(register):
    register(TrainingTaskSpec(
        name="generator", build=build_generator_task,
        exports={"fuser": "fuser.safetensors", "generator": "generator.safetensors"},
        optional_exports={"text_encoder": "text_encoder.safetensors"},
        description="the fuser and generator under the masked objective (v2a.objective)",
    ))
