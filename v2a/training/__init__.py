"""Training: ``v2a train RECIPE [key=value ...] [--resume] [--out DIR]``, on a CPU, a GPU, or many
through ``torchrun --nproc_per_node N -m v2a train RECIPE``.

What is trained is the recipe's ``training.task``, a task registered with the plug-ins
(:mod:`v2a.tasks`): the core's ``generator`` (:mod:`v2a.generator_task`: the
recipe's fuser and generator under :class:`~v2a.objective.MaskedObjective`), or one a plug-in
brings for its own component (the built-in reranker plug-in registers ``reranker``). Codes,
visual streams and audio features come from the feature cache (:class:`~v2a.datasets.CachedClips`),
or are computed on the fly from the manifest (:class:`~v2a.datasets.LiveClips`) when the recipe
names no cache.

The package, one job a module:

* :mod:`~v2a.training.data_order`: the stream of clips (:class:`ClipOrder`), its micro-batches
  (:class:`MicroBatches`) and the seeds of each (:func:`derived_seed`);
* :mod:`~v2a.training.loading`: the clips of a split, the DataLoader's user errors;
* :mod:`~v2a.training.schedules`: the learning rate and the EMA of the weights;
* :mod:`~v2a.training.checkpoints`: writing, reading, listing, pruning checkpoints;
* :mod:`~v2a.training.requirements`: what a recipe must hold to train;
* :mod:`~v2a.training.samples`: the audio samples logged while training;
* :mod:`~v2a.training.trainer`: the loop (:class:`Trainer`, :func:`train`).

The task interface and its registry lookups are below the engine, in :mod:`v2a.tasks`; the
core's own task in :mod:`v2a.generator_task` (both are imported whenever the plug-ins load, so
neither imports this package).

The loop (one optimiser step; nanoGPT-style, nothing hidden)::

    for each of grad_accum micro-batches:      # DDP syncs gradients on the last one only
        loss = task(batch, generator) / grad_accum    (autocast in bf16/fp16)
        loss.backward()
    clip the gradient norm; AdamW step (lr: linear warm-up, then cosine to lr_min); EMA update

Determinism (what makes ``--resume`` exact). The data are one endless stream: epoch ``e`` is a
permutation of the training clips drawn from ``(seed, e)``; step ``s`` takes the next
``world_size × grad_accum × batch_size`` clips of the stream, micro-batch ``m`` of rank ``r``
the slice of "slot" ``m · world_size + r`` (``batch_size`` clips from ``slot · batch_size``).
The only data position to save is the number of clips consumed. Every random number of a
micro-batch (masks, conditioning dropout, model dropout) comes from generators seeded by
``(seed, step, slot)``. So no random state carries over from one step to the next: a run
restored from the checkpoint of step ``s`` performs step ``s + 1`` exactly as the uninterrupted
run did (same hardware and thread count); and a step does not depend on how its slots are
shared between processes and accumulation (2 processes × ``grad_accum`` 1 compute what 1
process × ``grad_accum`` 2 computes: the same sums, halved instead of averaged).

Checkpoints (``<out>/checkpoints/step_<N>/``, written by rank 0 into a temporary folder
``.step_<N>.v2a-tmp-<host>-<pid>-<hex>`` that is renamed into place, so a checkpoint is complete
or absent; the temporaries of dead processes are removed when a run starts; the newest
``keep_checkpoints`` are kept, the older ones removed once the new one is complete). A run
folder that stops taking files (read-only, no permission, a full disk) stops the run with one
sentence naming the folder, the error and the last good checkpoint to resume from; the
checkpoint being written stays a temporary, never a half checkpoint under its final name::

    model.safetensors      the trained weights (task state dict; frozen encoders left out)
    ema.safetensors        the EMA weights, same keys (only when training.ema > 0)
    optimizer.safetensors  AdamW's state tensors, keys state.<param index>.<name>
    state.json             step, clips consumed, epoch, learning rate schedule, param groups,
                           GradScaler state, RNG scheme, recipe hash, world size, the
                           fingerprints of every rank's weights (DDP), last metrics

At the end of a run the weights to use (EMA when on) are exported beside the checkpoints, one
file per trained slot under the name the task's spec declares, in ``training.export_dtype``
(checkpoints stay as trained): ``fuser.safetensors`` and ``generator.safetensors`` for the
generator task (:func:`~v2a.tasks.exported_weights` finds them for a
slot). ``<out>/recipe.yaml`` holds the resolved recipe, ``<out>/hub.json`` the commits its
``hf://`` weights resolved to (:func:`v2a.hub.record_commits`; kept by a resumed run),
``<out>/tensorboard/`` the logs, ``<out>/skipped.tsv`` the clips left out.
"""

from __future__ import annotations

from v2a.generator_task import GeneratorTask
from v2a.tasks import (
    TrainingError,
    TrainingTask,
    build_task,
    exported_weights,
    trained_state,
)
from v2a.training.checkpoints import (
    CHECKPOINT_FORMAT,
    RESUMABLE_FIELDS,
    checkpoints,
    fingerprint,
    latest_checkpoint,
    recipe_hash,
    write_checkpoint,
)
from v2a.training.data_order import ClipOrder, MicroBatches, derived_seed
from v2a.distributed import Distributed, setup_distributed
from v2a.training.loading import open_split, worker_errors
from v2a.training.schedules import EMA, learning_rate
from v2a.training.trainer import Trainer, TrainResult, run_dir_for, train

__all__ = [
    "CHECKPOINT_FORMAT",
    "EMA",
    "RESUMABLE_FIELDS",
    "ClipOrder",
    "Distributed",
    "GeneratorTask",
    "MicroBatches",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "TrainingTask",
    "build_task",
    "checkpoints",
    "derived_seed",
    "exported_weights",
    "fingerprint",
    "latest_checkpoint",
    "learning_rate",
    "open_split",
    "recipe_hash",
    "run_dir_for",
    "setup_distributed",
    "train",
    "trained_state",
    "worker_errors",
    "write_checkpoint",
]
