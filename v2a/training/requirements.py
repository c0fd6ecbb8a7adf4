"""What a recipe must hold before a training run starts: training options in range for the
device, and every slot its training task trains."""

from __future__ import annotations

import torch

from v2a.errors import RecipeError
from v2a.recipe import Recipe
from v2a.registry import TrainingTaskSpec, default_registry


def check_trainable(recipe: Recipe, spec: TrainingTaskSpec, device: torch.device) -> None:
    """A :class:`RecipeError` in one sentence when ``recipe`` cannot train its task ``spec`` on
    ``device``."""
    c = recipe.training
    problems = [
        (c.steps < 1, "training.steps must be at least 1"),
        (c.batch_size < 1, "training.batch_size must be at least 1"),
        (c.grad_accum < 1, "training.grad_accum must be at least 1"),
        (not 0.0 <= c.ema < 1.0, "training.ema must lie in [0, 1)"),
        (c.lr <= 0, "training.lr must be positive"),
        (c.checkpoint_every < 1, "training.checkpoint_every must be at least 1"),
        (c.keep_checkpoints < 1, "training.keep_checkpoints must be at least 1"),
        (c.log_every < 1, "training.log_every must be at least 1"),
        (c.eval_every < 0 or c.sample_every < 0, "training.eval_every and sample_every must not be negative"),
        (c.precision == "fp16" and device.type == "cpu",
         "training.precision=fp16 needs a GPU; use bf16 on a CPU"),
    ]
    for bad, message in problems:
        if bad:
            raise RecipeError(f"{recipe.source}: {message}")
    for slot in spec.slots:
        if not recipe.has(slot):
            raise RecipeError(f"{recipe.source}: the recipe has no {slot}, which the "
                              f"{spec.name} task trains{other_tasks_hint(recipe, spec)}")


def other_tasks_hint(recipe: Recipe, spec: TrainingTaskSpec) -> str:
    """``; to train its reranker, set training.task=reranker``: the registered tasks other than
    ``spec`` whose slots the recipe has (empty when there is none)."""
    registry = default_registry()
    others = [registry.training_task(name) for name in registry.training_task_names()
              if name != spec.name]
    fitting = [s for s in others if all(recipe.has(slot) for slot in s.slots)]
    return "".join(f"; to train its {' and '.join(s.slots)}, set training.task={s.name}"
                   for s in fitting)
