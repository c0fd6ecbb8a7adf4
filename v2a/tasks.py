"""Training tasks: what ``v2a train`` trains, the interface a plug-in implements to add one, and
the files a training run exports.

A recipe names its task with ``training.task: <name>``; the name is looked up in the registry
(:meth:`v2a.registry.Registry.training_task`), where plug-ins put :class:`~v2a.registry.TrainingTaskSpec`
objects through the hook :func:`v2a.hookspecs.v2a_register_training_tasks`. The core registers
its own ``generator`` task (:mod:`v2a.generator_task`) the same way; others come with
the plug-ins whose components they train.

The spec declares, without building anything, which recipe slots the task trains and the file
each slot's weights are exported as (``exports``); :func:`exported_weights` finds those files in
a run folder. The task itself is a :class:`TrainingTask`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import torch
from torch import Tensor, nn

from v2a.errors import PluginError, RecipeError, UserError
from v2a.recipe.config import ExportDtype
from v2a.registry import Registry, TrainingTaskSpec, default_registry

if TYPE_CHECKING:
    from v2a.recipe import Recipe

#: ``training.export_dtype`` names and the dtype each stores the exported weights in (their
#: float32 tensors; checkpoints always keep the tensors as trained).
EXPORT_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name)
                                         for name in get_args(ExportDtype)}


class TrainingError(UserError):
    """A run that cannot start or continue: a bad output folder, a checkpoint of another
    recipe, data that do not fit the task, a loss that diverged."""


class TrainingTask(nn.Module, abc.ABC):
    """What one batch costs: the trained modules and their loss, as the trainer drives them.

    The contract (:class:`v2a.training.Trainer` relies on each point):

    * **Built from a recipe**: the spec's ``build(recipe)`` returns the task, with every slot
      its spec declares (:attr:`~v2a.registry.TrainingTaskSpec.slots`) built from the recipe
      (``recipe.build(slot)``, which loads the slot's ``weights`` when it names a file: training
      then starts from them). The trainer seeds PyTorch before the build, so initialisation is
      reproducible.
    * **Parameters**: every parameter with ``requires_grad`` is trained (AdamW; weight decay on
      matrices only). ``state_dict()`` minus the frozen modules is what a checkpoint holds.
    * :attr:`frozen`: sub-modules that are not trained (an audio encoder that computes
      targets): the trainer keeps them in eval mode without gradients, shares them with the
      EMA copy instead of copying them, and leaves them out of checkpoints.
    * :meth:`check_batch`: called once, on the first batch; raises :class:`TrainingError` (one
      sentence) when the data cannot train this task (a missing stream, features of another
      width).
    * :meth:`forward`: ``forward(batch, generator) -> {term: scalar tensor}`` with a ``"loss"``
      to back-propagate; every term is logged (``train/<term>``, ``val/<term>``).
      ``generator`` seeds every random choice of the step (masks, dropout of the
      conditioning), so that a step is reproducible; ``batch`` is a :class:`v2a.items.Batch` on
      the trainer's device.
    * :meth:`exports`: ``{slot: module}`` for exactly the slots of the spec's ``exports``; at
      the end of a run each module (the EMA copy's when EMA is on) is written to its declared
      file: by the module's own ``save_weights(path)`` when it has one, else as its
      ``state_dict()`` in safetensors (what the slot's ``weights`` option loads back); either
      file's float32 tensors are then stored in ``training.export_dtype``, so the module's
      loader must cast what it loads to the model's dtype (``load_state_dict`` does).
    * optional ``generate(batch, sampling) -> codes [b, k, l]``: audio for TensorBoard, sampled
      with the recipe's ``sampling`` options and decoded by the recipe's codec.
    * optional :attr:`notes`: sentences about how the recipe configures the task (an option
      that has no effect), shown once when the run starts.
    """

    def __init__(self) -> None:
        super().__init__()
        self.frozen: list[nn.Module] = []
        self.notes: list[str] = []

    def check_batch(self, batch: Any) -> None:
        """Raise :class:`TrainingError` when ``batch`` cannot train this task (by default
        every batch can)."""

    @abc.abstractmethod
    def forward(self, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        """The terms of ``batch``; ``"loss"`` is back-propagated."""

    @abc.abstractmethod
    def exports(self) -> dict[str, nn.Module]:
        """The trained module of each slot the spec's ``exports`` declares."""


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
