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
from v2a.interfaces import MaskedGenerator, TextEncoder
from v2a.objective import MaskedObjective, stream_dropout
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
    features come with the batch (from the cache), so it never runs here.

    With a recipe ``text_encoder``, each batch's ``captions`` are encoded at every step and
    fused with the video (a clip without a caption has its text dropped); in training mode a
    row loses its video with probability ``training.video_dropout`` and its text with
    ``training.text_dropout`` (:func:`~v2a.objective.stream_dropout`, from the step's
    generator), beside the objective's dropout of the whole conditioning. A text encoder with
    trainable parameters (``learned_words``) trains with the model and is exported as
    ``text_encoder.safetensors`` (an optional export of the task's spec); a frozen one
    (``clip_text``, ``t5``) is kept out of the parameters and the exports."""

    def __init__(self, recipe: Recipe):
        super().__init__()
        t = recipe.training
        self.fuser = recipe.build("fuser")
        self.video_dropout, self.text_dropout = t.video_dropout, t.text_dropout
        self.text_encoder = self._text_encoder(recipe)
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
        self.export_text_encoder = self.text_encoder is not None and any(
            p.requires_grad for p in self.text_encoder.parameters())
        if self.text_encoder is not None and not self.export_text_encoder:
            self.frozen.append(self.text_encoder)
        if t.aux_regression_weight and not recipe.has("audio_encoder"):
            self.notes = ["the recipe has no audio_encoder, so aux_regression is off"]

    def _text_encoder(self, recipe: Recipe) -> TextEncoder | None:
        """The recipe's text encoder (frozen when it has nothing to train), or None."""
        if not recipe.has("text_encoder"):
            return None
        encoder = recipe.build("text_encoder")
        if any(p.requires_grad for p in encoder.parameters()):
            return encoder
        return encoder.requires_grad_(False).eval()

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

    def condition(self, batch: Batch, generator: torch.Generator | None = None) -> Conditioning:
        """The fuser's conditioning of ``batch``, with its captions when there is a text
        encoder; per-stream dropout (drawn from ``generator``) in training mode only."""
        num_frames = batch.codes.shape[-1]
        if self.text_encoder is None:
            return self.fuser(batch.streams, frame_rate=batch.frame_rate, num_frames=num_frames)
        captions = list(getattr(batch, "captions", None) or [None] * len(batch))
        device = batch.codes.device
        drop_video, drop_text = stream_dropout(
            len(captions), video=self.video_dropout if self.training else 0.0,
            text=self.text_dropout if self.training else 0.0, generator=generator, device=device)
        drop_text = drop_text | torch.tensor([c is None for c in captions], device=device)
        text = self.text_encoder.encode([c or "" for c in captions])
        return self.fuser(batch.streams, frame_rate=batch.frame_rate, num_frames=num_frames,
                          text=text, drop_video=drop_video, drop_text=drop_text)

    def forward(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        self.objective.frame_rate = batch.frame_rate
        return self.objective(batch.codes, self.condition(batch, generator),
                              audio_features=batch.audio_features, generator=generator,
                              valid=batch.valid)

    @torch.no_grad()
    def generate(self, batch: Batch, sampling: Callable[..., Tensor]) -> Tensor:
        """Codes ``[b, k, l]`` sampled for ``batch`` by ``sampling(generator, condition,
        num_frames=)`` (the trainer's: :func:`v2a.sampler.sample` with the recipe's options)."""
        return sampling(self.generator, self.condition(batch), num_frames=batch.codes.shape[-1])

    def exports(self) -> dict[str, nn.Module]:
        modules = {"fuser": self.fuser, "generator": self.generator}
        if self.export_text_encoder:
            modules["text_encoder"] = self.text_encoder
        return modules


@hookimpl
def v2a_register_training_tasks(register):
    register(TrainingTaskSpec(
        name="generator", build=GeneratorTask,
        exports={"fuser": "fuser.safetensors", "generator": "generator.safetensors"},
        optional_exports={"text_encoder": "text_encoder.safetensors"},
        description="the fuser and generator under the masked objective (v2a.objective)",
    ))
