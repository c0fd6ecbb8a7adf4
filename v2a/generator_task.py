"""The core's training task, ``generator``: the recipe's fuser and generator under the masked
objective (:class:`~v2a.objective.MaskedObjective`: masked token prediction, plus the auxiliary
regression of the recipe's audio encoder features and the audio-visual contrastive term).

Registered through the same door as every plug-in (the ``generator_task`` entry point of the
``v2a`` group names this module), so ``v2a plugins`` lists it as ``training_task generator``.
Like a plug-in module it is imported whenever the registry loads, so it imports nothing of the
training engine (:mod:`v2a.training`) or the sampler: the trainer hands :meth:`GeneratorTask.generate`
its sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from v2a.hookspecs import hookimpl
from v2a.interfaces import MaskedGenerator
from v2a.objective import MaskedObjective
from v2a.registry import TrainingTaskSpec
from v2a.sequences import Conditioning
from v2a.tasks import TrainingError, TrainingTask

if TYPE_CHECKING:
    from v2a.items import Batch
    from v2a.recipe import Recipe


class GeneratorTask(TrainingTask):
    """The fuser and the generator under :class:`~v2a.objective.MaskedObjective`.

    ``forward(batch, generator)`` → the objective's terms (``loss``, ``ce``, ``aux_*``,
    ``accuracy``, ``mask_ratio``). The recipe's audio encoder sizes the regression head; its
    features come with the batch (from the cache), so it never runs here."""

    def __init__(self, recipe: Recipe):
        super().__init__()
        t = recipe.training
        self.fuser = recipe.build("fuser")
        generator = recipe.build("generator")
        encoder = None
        if recipe.has("audio_encoder") and t.aux_regression_weight != 0:
            encoder = recipe.build("audio_encoder").requires_grad_(False).eval()
        self.objective = MaskedObjective(
            generator, audio_encoder=encoder, level_policy=t.level_policy,
            condition_dropout=t.condition_dropout, aux_regression_weight=t.aux_regression_weight,
            aux_contrastive_weight=t.aux_contrastive_weight,
        )
        self.frozen = [encoder] if encoder is not None else []
        if t.aux_regression_weight and not recipe.has("audio_encoder"):
            self.notes = ["the recipe has no audio_encoder, so aux_regression is off"]

    @property
    def generator(self) -> MaskedGenerator:
        return self.objective.generator

    def check_batch(self, batch: Batch) -> None:
        """One sentence when the data cannot train this task."""
        if batch.codes is None:
            raise TrainingError("the data hold no codes (the recipe has no codec); the generator "
                                "task needs the codes of the recipe's codec")
        if self.objective.regression_head is not None and batch.audio_features is None:
            raise TrainingError(
                "training.aux_regression_weight is not 0 but the data hold no audio features; "
                "add the recipe's audio_encoder to the cache (`v2a extract`) or set "
                "training.aux_regression_weight=0"
            )
        for name, width in getattr(self.fuser, "stream_dims", {}).items():
            seq = batch.streams.get(name)
            if seq is not None and seq.dim != width:
                raise TrainingError(
                    f"the data hold {seq.dim}-wide features of visual stream {name!r} but the "
                    f"fuser reads it {width} wide (fuser.streams.{name}): either that option is "
                    f"wrong, or the encoder changed since `v2a extract` wrote the cache (the cache "
                    f"key covers options and weights, not code): then delete the cache and "
                    f"extract again"
                )

    def condition(self, batch: Batch) -> Conditioning:
        return self.fuser.fuse(batch.streams, frame_rate=batch.frame_rate,
                               num_frames=batch.codes.shape[-1])

    def forward(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        self.objective.frame_rate = batch.frame_rate
        return self.objective(batch.codes, self.condition(batch), audio_features=batch.audio_features,
                              generator=generator, valid=batch.valid)

    @torch.no_grad()
    def generate(self, batch: Batch, sampling: Callable[..., Tensor]) -> Tensor:
        """Codes ``[b, k, l]`` sampled for ``batch`` by ``sampling(generator, condition,
        num_frames=)`` (the trainer's: :func:`v2a.sampler.sample` with the recipe's options)."""
        return sampling(self.generator, self.condition(batch), num_frames=batch.codes.shape[-1])

    def exports(self) -> dict[str, nn.Module]:
        return {"fuser": self.fuser, "generator": self.generator}


@hookimpl
def v2a_register_training_tasks(register):
    register(TrainingTaskSpec(
        name="generator", build=GeneratorTask,
        exports={"fuser": "fuser.safetensors", "generator": "generator.safetensors"},
        description="the fuser and generator under the masked objective (v2a.objective)",
    ))
