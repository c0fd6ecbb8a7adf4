"""The interfaces of v2a's components and their tensor contracts.

Every component is a :class:`torch.nn.Module` (so ``.to()``, ``state_dict()`` and ``eval()``
behave as everywhere in PyTorch) that implements one of the seven interfaces below. A plug-in
registers a factory for one of them under a name (see :mod:`v2a.registry`); a recipe picks it by
that name. :mod:`v2a.testing` checks each contract below, one test per check. The interface
of a training task, :class:`TrainingTask` (:mod:`v2a.tasks` looks tasks up), is here too.

Conventions shared by all interfaces
------------------------------------
* Waveforms are ``[b, c, n]`` float, nominally in ``[-1, 1]``, at the component's
  ``sample_rate``. A codec's ``decode`` may overshoot full scale a little; it must not clip (a
  clipped peak is flat and cannot be limited back into shape): ``v2a generate`` brings peaks under
  its ceiling in the output stage (:mod:`v2a.output_stage`) before anything is written.
* Video frames are ``[b, t, 3, h, w]`` float RGB in ``[0, 1]`` sampled at the encoder's ``fps``,
  with their presentation times ``times: [t]`` in seconds, shared by the batch (clips of one
  batch are cut on the same time grid).
* Anything over time that is not a waveform or codes is a
  :class:`~v2a.sequences.FeatureSequence` (``values: [b, t, d]`` + ``rate`` + ``start`` +
  padding ``mask``), so a rate is never guessed.
* Codes are ``[b, k, l]`` int64 in ``[0, codebook_size)``: ``k`` codebooks (RVQ levels, coarse
  first) by ``l`` frames at the codec's ``frame_rate``.
* Texts (prompts) are plain ``str``; a text encoder's result is a
  :class:`~v2a.sequences.TextFeatures`, whose tokens are a ``FeatureSequence`` at rate 1.0.
* Every output row depends only on its own input row (batch independence), and in ``eval()``
  mode every method is deterministic.
"""

from __future__ import annotations

import abc
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from v2a.sequences import Conditioning, FeatureSequence, TextFeatures


class Component(nn.Module, abc.ABC):
    """Base of every pluggable component. ``kind`` names the interface (``"codec"``, ...)."""

    kind: ClassVar[str] = ""


def fit_length(wav: Tensor, length: int) -> Tensor:
    """``wav: [..., n]`` trimmed or zero-padded at the end to exactly ``length`` samples
    (``wav`` itself when it has them already)."""
    n = wav.shape[-1]
    if n == length:
        return wav
    return wav[..., :length] if n > length else F.pad(wav, (0, length - n))


#: Set on a ``decode`` that :class:`AudioCodec` has already wrapped to fit its output.
_FITS_LENGTH = "_v2a_fits_length"


def _fitting_length(decode: Callable) -> Callable:
    """A codec's own ``decode(codes, length=None)`` with its output fitted to the contract."""

    @functools.wraps(decode)
    def fitted(self: AudioCodec, codes: Tensor, length: int | None = None) -> Tensor:
        return self._fit_decoded(decode(self, codes, length=length), codes, length)

    setattr(fitted, _FITS_LENGTH, True)
    return fitted


def _decode_frames_by_decode(self: AudioCodec, codes: Tensor) -> Tensor:
    """The ``decode_frames`` of a codec that overrides ``decode`` itself: its decode without a
    length (already at ``num_samples(l)``)."""
    return self.decode(codes)


class AudioCodec(Component):
    """Waveform ⇄ discrete codes (a neural codec such as DAC or EnCodec).

    Attributes (set in ``__init__``):
        sample_rate (int): samples per second of ``encode``'s input and ``decode``'s output.
        channels (int): audio channels ``c``.
        frame_rate (float): code frames per second (DAC 44.1 kHz: 44100 / 512 = 86.13).
        n_codebooks (int): ``k``, the number of RVQ levels ``encode`` returns.
        codebook_size (int): entries per codebook; codes lie in ``[0, codebook_size)``.
        latent_dim (int): width of the continuous latents returned by :meth:`latents`.

    Decoding: a codec implements :meth:`decode_frames`, its decoder's waveform at whatever
    length the decoder gives, and inherits :meth:`decode`, which fits that waveform to the
    length contract. A codec may instead override ``decode(codes, length=None)`` itself, as
    codecs written before ``decode_frames`` existed do: when the class is created its
    ``decode`` is wrapped so that what it returns is fitted the same way (nothing changes for
    a ``decode`` that already keeps the contract), and its ``decode_frames`` is its ``decode``
    without a length. Only a ``decode`` defined as a plain function in the class body is
    wrapped. An override that calls ``super().decode(...)`` reaches :meth:`decode_frames`, so
    it needs one of its own or from a parent.
    """

    kind = "codec"
    sample_rate: int
    channels: int
    frame_rate: float
    n_codebooks: int
    codebook_size: int
    latent_dim: int

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("decode")
        if not inspect.isfunction(own) or getattr(own, _FITS_LENGTH, False):
            return
        cls.decode = _fitting_length(own)
        if getattr(cls.decode_frames, "__isabstractmethod__", False):
            cls.decode_frames = _decode_frames_by_decode

    @abc.abstractmethod
    def encode(self, wav: Tensor) -> Tensor:
        """``wav: [b, c, n]`` float → ``codes: [b, k, l]`` int64, ``l = self.num_frames(n)``."""

    def decode(self, codes: Tensor, length: int | None = None) -> Tensor:
        """``codes: [b, k, l]`` → ``wav: [b, c, n]`` float.

        Without ``length``, ``n = num_samples(l)``, about ``l * sample_rate / frame_rate``;
        with ``length`` the output has exactly ``length`` samples: the ``num_samples(l)``
        samples of the decode without ``length``, trimmed or followed by zeros. This method
        keeps that contract for every codec: it fits the waveform :meth:`decode_frames`
        returns, or what a codec's own ``decode`` returns (see the class docstring).
        """
        return self._fit_decoded(self.decode_frames(codes), codes, length)

    @abc.abstractmethod
    def decode_frames(self, codes: Tensor) -> Tensor:
        """``codes: [b, k, l]`` → ``wav: [b, c, n']`` float at the decoder's own length ``n'``
        (a codec's natural ``l * hop``; :meth:`decode` trims or zero-pads it to
        ``num_samples(l)`` and to the length asked for)."""

    def _fit_decoded(self, wav: Tensor, codes: Tensor, length: int | None) -> Tensor:
        """A decoded ``wav`` fitted to :meth:`decode`'s contract for ``codes`` and ``length``
        (anything that is not a tensor is returned as it is, for the caller to refuse)."""
        if not isinstance(wav, Tensor):
            return wav
        wav = fit_length(wav, self.num_samples(codes.shape[-1]))
        return wav if length is None else fit_length(wav, length)

    @abc.abstractmethod
    def latents(self, codes: Tensor) -> FeatureSequence:
        """``codes: [b, k, l]`` → continuous latents ``[b, l, latent_dim]`` at ``frame_rate``.

        Used by metrics (Fréchet distance on codec latents) and auxiliary losses.
        """

    def num_frames(self, num_samples: int) -> int:
        """Code frames ``encode`` returns for ``num_samples`` samples (partial frames count)."""
        return math.ceil(num_samples * self.frame_rate / self.sample_rate - 1e-6)

    def num_samples(self, num_frames: int) -> int:
        """Samples ``decode`` returns for ``num_frames`` frames when no length is given."""
        return round(num_frames * self.sample_rate / self.frame_rate)


class VisualEncoder(Component):
    """Video frames → a feature sequence (CLIP per frame, S3D per clip of frames, ...).

    Attributes:
        fps (float): the frame rate the encoder wants its input sampled at.
        frame_size (tuple[int, int] | None): ``(h, w)`` the frames must have, or ``None`` if
            any size is accepted. Resizing/cropping to it is the caller's job
            (:mod:`v2a.media` does it when decoding).
        dim (int): feature width ``d``.
        rate (float): feature steps per second of the output (``fps`` for a per-frame
            encoder, ``fps / 8`` for S3D).
    """

    kind = "visual_encoder"
    fps: float
    frame_size: tuple[int, int] | None
    dim: int
    rate: float

    @abc.abstractmethod
    def encode(self, frames: Tensor, times: Tensor) -> FeatureSequence:
        """``frames: [b, t, 3, h, w]`` in [0, 1], ``times: [t]`` s → ``[b, t', dim]`` at ``rate``.

        The output's ``start`` is the time the first feature describes, derived from ``times``.
        """


class AudioEncoder(Component):
    """Waveform → a feature sequence (BEATs, a mel spectrogram, ...).

    Feeds the reranker, auxiliary losses and metrics.

    Attributes:
        sample_rate (int): expected input rate; callers resample.
        dim (int): feature width.
        rate (float): feature steps per second.
    """

    kind = "audio_encoder"
    sample_rate: int
    dim: int
    rate: float

    @abc.abstractmethod
    def encode(self, wav: Tensor) -> FeatureSequence:
        """``wav: [b, c, n]`` → ``[b, t, dim]`` at ``rate``, ``t ≈ n / sample_rate * rate``."""


class ConditionFuser(Component):
    """Several visual feature sequences at their own rates (and, optionally, a text) → the
    generator's conditioning.

    Attributes:
        dim (int): width of the produced sequences.
        provides_aligned (bool): ``fuse`` returns ``Conditioning.aligned``.
        provides_context (bool): ``fuse`` returns ``Conditioning.context``.
        stream_dims (Mapping[str, int]): the streams it consumes, by name, with their widths.
        accepts_text (bool): ``fuse`` takes the ``text``, ``drop_video`` and ``drop_text``
            keywords (``False`` here: a fuser of video alone, whose ``fuse`` may not even have
            those parameters; the core then never passes them). A fuser that accepts text
            also has ``text_dim`` and ``text_pooled_dim`` (int): the widths of the
            :class:`~v2a.sequences.TextFeatures` tokens and pooled vector it reads.

    Text (a fuser with ``accepts_text``): ``text`` is the encoded prompt of each row
    (:class:`~v2a.sequences.TextFeatures`, ``b`` rows) or ``None``, which is the same as every
    row's text dropped. ``drop_video: [b]`` bool: those rows are fused as if they had no video,
    from the fuser's learned null video conditioning, on the aligned and the context path alike,
    so that a text-only row still has an aligned sequence of ``num_frames`` steps; their result
    does not depend on their streams. ``streams`` may then be empty (every row's video dropped,
    text-only generation). ``drop_text: [b]`` bool: those rows are fused as if no text were
    given (the same values at the valid steps; the text's steps may remain, masked out).
    ``None`` masks drop nothing. The conformance kit checks these points
    (``check_fuser_text``, ``check_fuser_drop_video``).
    """

    kind = "fuser"
    dim: int
    provides_aligned: bool
    provides_context: bool
    stream_dims: Mapping[str, int]
    accepts_text: ClassVar[bool] = False

    @abc.abstractmethod
    def fuse(
        self,
        streams: Mapping[str, FeatureSequence],
        *,
        frame_rate: float,
        num_frames: int,
        text: TextFeatures | None = None,
        drop_video: Tensor | None = None,
        drop_text: Tensor | None = None,
    ) -> Conditioning:
        """Streams (any rates, lengths, padding) → conditioning for ``num_frames`` codec frames.

        ``aligned`` (if provided) is ``[b, num_frames, dim]`` at ``frame_rate`` starting at 0 s;
        ``context`` (if provided) is ``[b, s, dim]`` with a padding mask where streams had one.
        Padded steps of an input never change the result. ``text``, ``drop_video`` and
        ``drop_text``: see the class docstring (only a fuser with ``accepts_text`` takes them).
        """

    def forward(self, streams, *, frame_rate, num_frames, text=None, drop_video=None,
                drop_text=None):
        """``fuse``; the text keywords are passed only when one is given, so a fuser of video
        alone whose ``fuse`` lacks them keeps working. Text for a fuser without
        ``accepts_text`` is a ``ValueError`` (a recipe check refuses such a recipe first)."""
        extra = {name: value for name, value in
                 (("text", text), ("drop_video", drop_video), ("drop_text", drop_text))
                 if value is not None}
        if extra and not self.accepts_text:
            raise ValueError(f"{type(self).__name__} does not accept text (accepts_text is False), "
                             f"but {', '.join(extra)} was given")
        return self.fuse(streams, frame_rate=frame_rate, num_frames=num_frames, **extra)


class MaskedGenerator(Component):
    """Codes + mask + conditioning → logits over every codebook entry at every position.

    Work that depends on the conditioning alone (projections, a context encoder, the
    unconditional embedding of dropped rows) happens in :meth:`prepare`, so that a sampler runs
    it once per video and reuses the result at every decoding step and for every candidate;
    :meth:`predict` does the rest. ``forward`` is ``predict(codes, mask, prepare(condition))``.

    Attributes:
        n_codebooks (int): ``k``.
        codebook_size (int): the vocabulary of each level.
        condition_dim (int): width of the conditioning sequences it accepts.
        uses_aligned (bool) / uses_context (bool): which parts of a
            :class:`~v2a.sequences.Conditioning` it reads.
        hidden_dim (int): width of the hidden states ``predict`` returns with
            ``return_hidden=True`` (for auxiliary losses).
    """

    kind = "generator"
    n_codebooks: int
    codebook_size: int
    condition_dim: int
    uses_aligned: bool
    uses_context: bool
    hidden_dim: int

    def prepare(self, condition: Conditioning, *, drop: Tensor | None = None) -> Conditioning:
        """The conditioning as ``predict`` consumes it, computed once per video.

        ``drop: [b]`` bool replaces the conditioning of the rows where it is ``True`` with the
        unconditional one (conditioning dropout in training, and the unconditional half of a
        batched classifier-free guidance pass); a dropped row's result does not depend on its
        input conditioning. Padded steps of ``condition.context`` (mask ``False``) never change
        the result. The returned :class:`~v2a.sequences.Conditioning` keeps one row per input
        row, so callers may ``index_select``/``repeat_interleave`` it (e.g. for candidates).
        The default returns ``condition`` unchanged and only accepts ``drop=None``.
        """
        if drop is not None and bool(drop.any()):
            raise NotImplementedError(f"{type(self).__name__} must override prepare to support drop")
        return condition

    @abc.abstractmethod
    def predict(
        self,
        codes: Tensor,
        mask: Tensor,
        prepared: Conditioning,
        *,
        return_hidden: bool = False,
        level: int | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``codes: [b, k, l]`` int64, ``mask: [b, k, l]`` bool → ``logits: [b, k, l, vocab]``.

        ``mask`` is ``True`` where a code is hidden (to be predicted): the code values there are
        never read. ``prepared`` comes from :meth:`prepare`. With ``return_hidden`` also returns
        the final hidden states ``[b, l, hidden_dim]``. With ``level`` only that level's logits
        are computed: ``[b, 1, l, vocab]``, equal to ``logits[:, level:level + 1]`` (a sampler
        decoding one level at a time needs no more).
        """

    def forward(
        self,
        codes: Tensor,
        mask: Tensor,
        condition: Conditioning,
        *,
        drop: Tensor | None = None,
        return_hidden: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``predict(codes, mask, prepare(condition, drop=drop))``."""
        prepared = self.prepare(condition, drop=drop)
        return self.predict(codes, mask, prepared, return_hidden=return_hidden)


class Reranker(Component):
    """Scores generated candidates against their video; the best one is kept.

    Attributes:
        sample_rate (int): the rate of the candidate waveforms it expects.
        video_streams (Mapping[str, int]): the visual streams it reads, by name, with widths.
    """

    kind = "reranker"
    sample_rate: int
    video_streams: Mapping[str, int]

    @abc.abstractmethod
    def score(self, candidates: Tensor, video: Mapping[str, FeatureSequence]) -> Tensor:
        """``candidates: [b, n, c, s]`` → ``scores: [b, n]`` float, higher is better.

        ``video`` holds the visual streams of the ``b`` videos (``[b, t, d]`` each). Reordering
        the candidates reorders the scores the same way.
        """

    def select(self, candidates: Tensor, video: Mapping[str, FeatureSequence]) -> Tensor:
        """Index ``[b]`` of the best candidate per video; ties go to the earliest candidate."""
        scores = self.score(candidates, video).nan_to_num(nan=-torch.inf)
        best = scores.max(dim=1, keepdim=True).values
        first = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
        return torch.where(scores >= best, first, scores.shape[1]).min(dim=1).values


class TextEncoder(Component):
    """Texts (prompts) → one feature per token and one pooled vector per text.

    Attributes:
        dim (int): width of the token features.
        pooled_dim (int): width of the pooled vector.
        max_tokens (int): the most tokens one text gives; a longer text is truncated to its
            first ``max_tokens`` tokens, never refused.
    """

    kind = "text_encoder"
    dim: int
    pooled_dim: int
    max_tokens: int

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> TextFeatures:
        """``b`` texts → :class:`~v2a.sequences.TextFeatures` on the encoder's device.

        ``tokens`` is ``[b, t, dim]`` at rate 1.0 from 0 (one step per token, ``1 <= t <=
        max_tokens``) with a ``[b, t]`` bool mask, ``True`` = a real token; every row has at
        least one real token, the empty text ``""`` included, so cross-attention over it is
        defined. ``pooled`` is ``[b, pooled_dim]``. The real tokens and the pooled vector are
        finite and do not depend on the other texts of the batch nor on how far the batch is
        padded. Any Unicode text (accents, combining marks, CJK, emoji) is accepted.
        """

    def forward(self, texts: Sequence[str]) -> TextFeatures:  # noqa: D102
        return self.encode(texts)


@runtime_checkable
class Fittable(Protocol):
    """A component whose parameters are fitted to data without gradient training.

    ``fit`` receives waveforms ``[c, n]`` at the component's ``sample_rate`` (one per file) and
    returns a few statistics to report. ``v2a fit RECIPE SLOT FILES -o weights.safetensors``
    calls it and saves the component's ``state_dict()``; the recipe then names that file in the
    component's ``weights`` option.
    """

    sample_rate: int

    def fit(self, wavs: Iterable[Tensor]) -> dict[str, float]: ...


@runtime_checkable
class AudioClassifier(Protocol):
    """An audio model that also names what it hears: the class probabilities of a clip, which
    evaluation's KL divergence and Inception Score read (e.g. PANNs or PaSST, whose classes are
    AudioSet's 527). Implemented by an :class:`AudioEncoder` beside its ``encode``.

    ``classify(wav [b, c, n])`` at ``sample_rate`` → ``[b, len(class_names)]`` float, one row
    per clip, in [0, 1]: independent per-class probabilities (sigmoid) when ``multi_label``,
    else a distribution (softmax) whose rows sum to 1.
    """

    sample_rate: int
    class_names: Sequence[str]
    multi_label: bool

    def classify(self, wav: Tensor) -> Tensor: ...


@runtime_checkable
class SyncClassifier(Protocol):
    """A model that says how far a clip's audio is shifted against its video: one class per
    candidate offset (e.g. Synchformer's and SparseSync's 21 offsets from -2.0 to +2.0 s in
    0.2 s steps), which evaluation's DeSync and sync scores read. Implemented by a
    :class:`Reranker` beside its ``score`` (so the same model can pick candidates).

    ``offsets``: the offset of each class in seconds (positive: the audio comes late).
    ``offset_logits(audio [b, c, s], video)`` → ``[b, len(offsets)]`` float logits, for audio at
    ``sample_rate`` and the visual streams it reads (``video_streams``) over the same seconds.
    Optional ``window_seconds``: how many seconds one prediction reads (Synchformer 4.8,
    SparseSync 5.0); evaluation scores the first and the last window of that length of a clip
    (4.8 s when the attribute is missing).
    """

    sample_rate: int
    offsets: Sequence[float]

    def offset_logits(self, audio: Tensor, video: Mapping[str, FeatureSequence]) -> Tensor: ...


#: Interface of each component kind, by the name recipes and plug-ins use.
KINDS: dict[str, type[Component]] = {
    cls.kind: cls
    for cls in (AudioCodec, VisualEncoder, AudioEncoder, ConditionFuser, MaskedGenerator, Reranker,
                TextEncoder)
}


# -- training tasks -------------------------------------------------------------------------------

#: ``training.export_dtype`` names (:data:`v2a.recipe.config.ExportDtype`) and the dtype each
#: stores a training task's exported weights in (their float32 tensors; checkpoints always keep
#: the tensors as trained). Imported from :mod:`v2a.tasks`.
EXPORT_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name)
                                         for name in ("float32", "bfloat16", "float16")}


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
    * :meth:`check_batch`: called once, on the first batch; raises
      :class:`~v2a.tasks.TrainingError` (one sentence) when the data cannot train this task (a
      missing stream, features of another width).
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
        """Raise :class:`~v2a.tasks.TrainingError` when ``batch`` cannot train this task (by
        default every batch can)."""

    @abc.abstractmethod
    def forward(self, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        """The terms of ``batch``; ``"loss"`` is back-propagated."""

    @abc.abstractmethod
    def exports(self) -> dict[str, nn.Module]:
        """The trained module of each slot the spec's ``exports`` declares."""
