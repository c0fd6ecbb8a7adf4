"""The masked training objective of any :class:`~v2a.interfaces.MaskedGenerator`.

One call draws a training mask (:func:`v2a.masking.training_mask`, RVQ level policy
``per_level`` or ``joint``) and a conditioning-dropout mask, runs the generator once with its
hidden states, and returns every term separately:

* ``ce``: cross-entropy on the loss positions of the mask (``accuracy``: argmax accuracy there);
* ``aux_regression``: the generator's hidden states, through a learned linear head, regress an
  :class:`~v2a.interfaces.AudioEncoder`'s features of the target audio (BEATs in MaskVAT),
  resampled to the codec frame rate; the targets are layer-normalised per step so that the
  weight means the same for any encoder's feature scale;
* ``aux_contrastive``: symmetric InfoNCE over the batch between a pooled projection of the
  hidden states and a pooled projection of the (un-dropped) conditioning; 0 when fewer than two
  rows keep their conditioning;
* ``loss = ce + aux_regression_weight · aux_regression
  + aux_contrastive_weight · aux_contrastive``.

The generator and the heads are sub-modules, so ``objective.parameters()`` is what a trainer
optimises. The audio encoder is frozen and kept outside the parameters and the state dict
(``objective.to(device)`` does not move it: move it with the data pipeline).

:class:`GeneratorTask` is the core's ``generator`` training task built on it (registered by
:mod:`v2a.generator_task`, which imports this module only when the task is built).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from v2a.interfaces import AudioEncoder, MaskedGenerator, TextEncoder, TrainingTask
from v2a.masking import LEVEL_POLICIES, LevelPolicy, training_mask
from v2a.sequences import Conditioning, FeatureSequence
from v2a.tasks import TrainingError

if TYPE_CHECKING:
    from v2a.items import Batch
    from v2a.recipe import Recipe

# -- helpers ------------------------------------------------------------------------------------


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """``values: [b, t, d]``, ``mask: [b, t]`` (True = real) → ``[b, d]``."""
    if mask is None:
        return values.mean(dim=1)
    weight = mask.to(values.dtype).unsqueeze(-1)
    return (values * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE between matching rows of ``a: [n, d]`` and ``b: [n, d]``."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.t() / temperature  # [n, n]
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def stream_dropout(
    b: int, *, video: float, text: float, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Per-stream conditioning dropout: ``(drop_video, drop_text)``, ``[b]`` bool each, row
    ``i`` losing its video with probability ``video`` and its text with probability ``text``,
    independently. Draws ``2 · b`` uniforms from ``generator`` (video first), so a seeded
    step is reproducible."""
    for name, p in (("video", video), ("text", text)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} dropout must lie in [0, 1], got {p}")
    uniform = torch.rand(2, b, generator=generator, device=device)
    return uniform[0] < video, uniform[1] < text


# -- objective ----------------------------------------------------------------------------------


class MaskedObjective(nn.Module):
    """Masked token prediction with auxiliary regression and contrastive terms.

    Args:
        generator: the model being trained.
        audio_encoder: the frozen encoder whose features ``aux_regression`` predicts (its
            ``dim`` sizes the head); ``None`` disables the term.
        level_policy: ``"per_level"`` or ``"joint"`` (see :mod:`v2a.masking`).
        condition_dropout: probability that a row's conditioning is replaced by the
            unconditional one (classifier-free guidance), in training mode only.
        aux_regression_weight, aux_contrastive_weight: weights of the auxiliary terms.
        contrastive_dim: width of the common space of the contrastive term.
        contrastive_temperature: InfoNCE temperature.
        frame_rate: codec frames per second, to resample the audio features onto the codes;
            default: the rate of ``condition.aligned`` (required when the generator reads only
            a context sequence and regression is on).
    """

    def __init__(
        self,
        generator: MaskedGenerator,
        *,
        audio_encoder: AudioEncoder | None = None,
        level_policy: LevelPolicy = "per_level",
        condition_dropout: float = 0.1,
        aux_regression_weight: float = 0.1,
        aux_contrastive_weight: float = 0.1,
        contrastive_dim: int = 256,
        contrastive_temperature: float = 0.1,
        frame_rate: float | None = None,
    ):
        super().__init__()
        if level_policy not in LEVEL_POLICIES:
            choices = ", ".join(LEVEL_POLICIES)
            raise ValueError(f"unknown level policy {level_policy!r}; choose one of {choices}")
        if not 0.0 <= condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout must lie in [0, 1], got {condition_dropout}")
        self.generator = generator
        self.level_policy = level_policy
        self.condition_dropout = condition_dropout
        self.aux_regression_weight = aux_regression_weight
        self.aux_contrastive_weight = aux_contrastive_weight
        self.contrastive_temperature = contrastive_temperature
        self.frame_rate = frame_rate
        # the frozen encoder stays out of parameters() and state_dict()
        self._audio_encoder = (audio_encoder,)
        hidden = generator.hidden_dim
        self.regression_head = (
            nn.Linear(hidden, audio_encoder.dim) if audio_encoder is not None else None
        )
        self.audio_projection = nn.Linear(hidden, contrastive_dim)
        self.condition_projection = nn.Linear(generator.condition_dim, contrastive_dim)

    @property
    def audio_encoder(self) -> AudioEncoder | None:
        return self._audio_encoder[0]

    @torch.no_grad()
    def audio_features(self, wav: Tensor) -> FeatureSequence:
        """Regression targets for ``wav: [b, c, n]`` at the audio encoder's sample rate."""
        if self.audio_encoder is None:
            raise ValueError("this MaskedObjective has no audio encoder")
        return self.audio_encoder.eval().encode(wav)

    # -- terms ----------------------------------------------------------------------------------
    def _regression(
        self, hidden: Tensor, features: FeatureSequence, condition: Conditioning
    ) -> Tensor:
        l = hidden.shape[1]
        rate = self.frame_rate
        if rate is None and condition.aligned is not None:
            rate = condition.aligned.rate
        if rate is None:
            raise ValueError(
                "aux_regression needs the codec frame rate: pass frame_rate= to MaskedObjective"
            )
        target = features.to(hidden.device).resample(rate, l)  # [b, l, d] at the codec rate
        values = F.layer_norm(target.values.float(), target.values.shape[-1:])
        prediction = self.regression_head(hidden).float()  # [b, l, d]
        error = (prediction - values).pow(2).mean(dim=-1)  # [b, l]
        if target.mask is None:
            return error.mean()
        weight = target.mask.to(error.dtype)
        return (error * weight).sum() / weight.sum().clamp(min=1.0)

    def _contrastive(self, hidden: Tensor, condition: Conditioning, keep: Tensor) -> Tensor:
        if int(keep.sum()) < 2:
            return hidden.new_zeros(())
        audio = self.audio_projection(hidden.mean(dim=1))  # [b, c]
        parts = [s for s in (condition.aligned, condition.context) if s is not None]
        pooled = [_masked_mean(s.values, s.mask) for s in parts]
        video = self.condition_projection(torch.stack(pooled).mean(dim=0).to(audio.dtype))  # [b, c]
        return info_nce(audio[keep].float(), video[keep].float(), self.contrastive_temperature)

    # -- forward --------------------------------------------------------------------------------
    def forward(
        self,
        codes: Tensor,
        condition: Conditioning,
        *,
        audio_features: FeatureSequence | None = None,
        generator: torch.Generator | None = None,
        valid: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The terms for ``codes: [b, k, l]`` conditioned on ``condition`` (a fuser's output).

        ``audio_features`` (``[b, t, d]`` at any rate; see :meth:`audio_features`) are required
        when regression is on. ``generator`` seeds the masks and the conditioning dropout;
        ``valid: [b, l]`` marks real frames of a padded batch. Returns scalar tensors ``ce``,
        ``aux_regression``, ``aux_contrastive``, ``loss`` (the weighted total, the only one to
        back-propagate), ``accuracy`` and ``mask_ratio`` (the last two detached).
        """
        b = codes.shape[0]
        masks = training_mask(codes, self.level_policy, generator, valid=valid)
        p = self.condition_dropout if self.training else 0.0
        drop = torch.rand(b, generator=generator, device=codes.device) < p
        prepared = self.generator.prepare(condition, drop=drop)
        logits, hidden = self.generator.predict(codes, masks.input, prepared, return_hidden=True)

        picked = logits[masks.loss].float()  # [n, vocab]: only the loss positions
        target = codes[masks.loss]
        ce = F.cross_entropy(picked, target)
        accuracy = (picked.argmax(dim=-1) == target).float().mean().detach()

        zero = ce.new_zeros(())
        regression = zero
        if self.regression_head is not None and self.aux_regression_weight != 0:
            if audio_features is None:
                raise ValueError(
                    "aux_regression_weight is set but no audio_features were given; pass "
                    "audio_features=objective.audio_features(wav) or set the weight to 0"
                )
            regression = self._regression(hidden, audio_features, condition)
        contrastive = zero
        if self.aux_contrastive_weight != 0:
            contrastive = self._contrastive(hidden, condition, ~drop)
        loss = (ce + self.aux_regression_weight * regression
                + self.aux_contrastive_weight * contrastive)
        return {
            "loss": loss,
            "ce": ce,
            "aux_regression": regression,
            "aux_contrastive": contrastive,
            "accuracy": accuracy,
            "mask_ratio": masks.input.float().mean().detach(),
        }


# -- the core's training task -----------------------------------------------------------------


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
