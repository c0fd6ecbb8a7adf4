"""The hooks a v2a plug-in implements.

A plug-in is a module listed under the ``v2a`` entry-point group of its package::

    [project.entry-points.v2a]
    my_codec = "my_package.v2a_plugin"

which implements one or more of the hooks below, marked with :data:`v2a.hookimpl`. The built-in
plug-ins in ``plugins/`` are registered exactly this way, and so is the core's own training task
(``generator``, from :mod:`v2a.generator_task`).
"""

from __future__ import annotations

import pluggy

PROJECT = "v2a"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def v2a_register_components(register) -> None:
    """Register the components this plug-in provides.

    Call ``register(ComponentSpec(kind=..., name=..., build=..., config=...))`` once per
    component (see :class:`v2a.registry.ComponentSpec`). The registry, not the plug-in, checks
    the name and rejects one that another plug-in already uses. Keep this hook cheap: import
    heavy dependencies inside ``build``, not at module level, and list them in ``requires`` so
    that ``v2a plugins`` can say how to install them.
    """


@hookspec
def v2a_register_training_tasks(register) -> None:
    """Register the training tasks this plug-in provides (what ``v2a train`` can train).

    Call ``register(TrainingTaskSpec(name=..., build=..., exports=...))`` once per task (see
    :class:`v2a.registry.TrainingTaskSpec`); a recipe picks one with ``training.task: <name>``.
    ``build(recipe)`` returns a :class:`v2a.tasks.TrainingTask`. As for components, the
    registry checks the name and rejects one that another plug-in already uses.
    """
