"""The model: :class:`VideoToAudio`, a recipe's components ready to turn videos into audio."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from v2a.features import encode_frames, frame_request, window_frames
from v2a.generate.candidates import CandidateDecoder
from v2a.generate.editing import DEFAULT_CROSSFADE, plan_edit
from v2a.generate.errors import GenerationError
from v2a.generate.run_folder import RUN_SLOTS, check_run_recipe, load_run_weights, run_weights
from v2a.generate.stages import stage
from v2a.generate.video import checked_stretch, video_source
from v2a.generate.windows import (WINDOW_TOLERANCE, decode_in_windows, one_decode_call, window_seed,
                                 window_starts)
from v2a.interfaces import fit_length
from v2a.log import warn as log_warn
from v2a.media import Video, resample_audio
from v2a.recipe import Recipe, build_frozen
from v2a.sampler import Prompt, allow_tf32, recipe_sampling, sample
from v2a.sequences import FeatureSequence, TextFeatures
from v2a.tasks import exported_weights
from v2a.weights import is_random


@dataclass(frozen=True)
class TextPrompt:
    """A prompt and a negative prompt as the text encoder encoded them (either may be None)."""

    prompt: TextFeatures | None
    negative: TextFeatures | None


class VideoToAudio:
    """A recipe's codec, visual encoders, fuser, generator, (optional) reranker and (optional)
    text encoder, ready to turn videos and prompts into audio. Build it with :meth:`from_recipe`."""

    def __init__(self, recipe: Recipe, *, codec, encoders: dict, fuser, generator, reranker=None,
                 text_encoder=None, device: str | torch.device = "cpu"):
        self.recipe = recipe
        self.text_encoder = text_encoder
        self.codec = codec
        self.encoders = encoders  # stream name → VisualEncoder
        self.fuser = fuser
        self.generator = generator
        self.reranker = reranker
        self.device = torch.device(device)
        self.decode_candidates = CandidateDecoder(codec=codec)  # batch size measured per machine
        self._kept_candidate: tuple[Tensor, Tensor] | None = None  # (codes, wav): see sample_window

    @classmethod
    def from_recipe(cls, recipe: Recipe, checkpoint: str | Path | None = None, *,
                    device: str | torch.device = "cpu",
                    warn: Callable[[str], None] | None = None) -> VideoToAudio:
        """Build the recipe's components; load the fuser and generator of the training run
        folder ``checkpoint`` (strictly), and its text encoder when the run exported one (a
        text encoder trained with the model), or keep them as the recipe has them when it is
        None.

        A run whose ``recipe.yaml`` differs from ``recipe`` in
        :data:`~v2a.generate.run_folder.WEIGHT_SECTIONS` is refused (:func:`check_run_recipe`);
        ``warn(text)`` receives the warnings (default: :func:`v2a.log.warn`)."""
        for slot in ("codec", "fuser", "generator"):
            recipe.choice(slot)  # one sentence when the recipe lacks it
        if not recipe.visual_streams:
            raise GenerationError(f"{recipe.source} has no visual encoder; generation needs one")
        warn = warn or log_warn
        files = None
        if checkpoint is not None:  # the run is checked before anything is built (or downloaded)
            files = run_weights(Path(checkpoint))
            check_run_recipe(Path(checkpoint), recipe, warn)
        built = {slot: build_frozen(recipe.choice(slot)) for slot in ("codec", "fuser", "generator")}
        encoders = {name: build_frozen(recipe.choice(f"visual_encoders.{name}"))
                    for name in recipe.visual_streams}
        reranker = build_frozen(recipe.choice("reranker")) if recipe.has("reranker") else None
        text_encoder = None
        if recipe.has("text_encoder"):
            built["text_encoder"] = text_encoder = build_frozen(recipe.choice("text_encoder"))
            trained_text = None if checkpoint is None else exported_weights(Path(checkpoint),
                                                                             "text_encoder")
            if files is not None and trained_text is not None:
                files = {**files, "text_encoder": trained_text}
        missing = sorted(set(built["fuser"].stream_dims) - set(encoders))
        if missing:
            raise GenerationError(f"{recipe.source}: the fuser reads stream {missing[0]!r}, which no "
                                  f"visual encoder of the recipe provides")
        if files is not None:
            load_run_weights(built, files)
        else:  # said once all is built, not before an error that stops it
            _warn_if_untrained(recipe, warn)
        model = cls(recipe, codec=built["codec"], encoders=encoders, fuser=built["fuser"],
                    generator=built["generator"], reranker=reranker, text_encoder=text_encoder)
        return model.to(device)

    def to(self, device: str | torch.device) -> VideoToAudio:
        """Move every component to ``device`` (eval mode); on a GPU, float32 matrix products may
        use TF32 from then on (:func:`v2a.sampler.allow_tf32`)."""
        self.device = torch.device(device)
        allow_tf32(self.device)
        for module in self.components.values():
            module.to(self.device).eval()
        return self

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        """The model's components by recipe slot (``codec``, ``visual_encoders.<stream>``, ...)."""
        found = {"codec": self.codec, "fuser": self.fuser, "generator": self.generator,
                 **{f"visual_encoders.{name}": enc for name, enc in self.encoders.items()}}
        if self.reranker is not None:
            found["reranker"] = self.reranker
        if self.text_encoder is not None:
            found["text_encoder"] = self.text_encoder
        return found

    @property
    def window(self) -> float:
        return float(self.recipe.data.clip_seconds)

    @property
    def sample_rate(self) -> int:
        return int(self.codec.sample_rate)

    @property
    def window_frames(self) -> int:
        """Codec frames of one generation window (``data.clip_seconds``)."""
        return int(self.codec.num_frames(round(self.window * self.sample_rate)))

    @property
    def decode_context_frames(self) -> int:
        """Frames of context decoded on each side of a window of codes (one second): the codec's
        decoder sees its neighbourhood, so window seams do not show."""
        return max(1, round(float(self.codec.frame_rate)))

    # -- generation ----------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, video: str | Path | Tensor | Video | None, *,
                 prompt: str | None = None, negative_prompt: str | None = None,
                 fps: float | None = None,
                 start: float = 0.0, duration: float | None = None, seed: int | None = None,
                 candidates: int | None = None, steps=None, cfg: float | None = None,
                 temperature: float | None = None, precision: str | None = None,
                 progress: bool = False, keep_audio: Tensor | str | Path | None = None,
                 regenerate: list[tuple[float, float]] | None = None,
                 audio_prompt: Tensor | str | Path | None = None, audio_rate: int | None = None,
                 crossfade: float = DEFAULT_CROSSFADE) -> tuple[Tensor, int]:
        """Audio for ``video``: ``([c, n] float32 on the CPU, sample_rate)`` with
        ``n = round(duration · sample_rate)``, the sound of the stretch ``[start, start +
        duration]`` s of the video; ``duration`` defaults to the rest of the video after ``start``.

        ``video``: a file's path; a uint8 tensor ``[t, h, w, 3]`` (RGB bytes) or a float tensor
        ``[t, 3, h, w]`` in [0, 1], with its frame rate ``fps`` (frame ``i`` is shown from
        ``i / fps`` s, the video lasts ``t / fps``); or a :class:`~v2a.media.Video`. Frames in
        memory give exactly the audio of the file they were decoded from (``load_video(path,
        fps=the file's rate)``) when no encoder needs them resized; see :func:`video_source`.
        Options left None take the recipe's ``sampling`` values. ``progress`` shows a progress
        bar over the windows of a video longer than one window.

        Text (a recipe with a ``text_encoder``): ``prompt`` is encoded once and fused with
        every window's video; ``negative_prompt`` makes guidance's unconditional rows the
        fuser's conditioning of that text without the video (without it, they are the fully
        dropped conditioning, as with no prompt). ``video=None`` generates from ``prompt``
        alone: ``duration`` is then required, ``start`` and ``fps`` are not read, no video is
        decoded, and the reranker (which needs the video) is not used. A prompt for a recipe
        without a text encoder is refused in one sentence.

        Editing (:mod:`v2a.generate.editing`, docs/editing.md): ``keep_audio`` (a file whose
        audio track is cut like the video, or a waveform ``[c, n]`` of the clip at
        ``audio_rate`` Hz, default the codec's) is kept except in the ``regenerate`` stretches
        (seconds from ``start``), which are generated again around the kept codes;
        ``audio_prompt`` (a file or a waveform, shorter than the clip) is kept at the clip's
        start and the rest continues it. The output is the kept waveform itself outside the
        stretches, crossfaded over ``crossfade`` s of the kept side of each seam
        (:meth:`~v2a.generate.editing.AudioEdit.splice`). ``keep_audio`` without
        ``regenerate`` is refused (it would generate nothing).

        The result is the model's raw output (no limiting; see :mod:`v2a.output_stage`); a
        model that produces non-finite samples (damaged weights) raises :class:`GenerationError`.
        """
        self._kept_candidate = None
        seed = self.recipe.sampling.seed if seed is None else int(seed)
        options = self.sampling_options(candidates=candidates, steps=steps, cfg=cfg,
                                        temperature=temperature, precision=precision)
        text = self.text_conditioning(prompt, negative_prompt, video=video, duration=duration)
        if video is None:
            source, name, start = None, "the prompt", 0.0
        else:
            source = video_source(video, fps)
            name, duration = checked_stretch(source, start, duration)
        n = round(duration * self.sample_rate)
        edit = plan_edit(keep_audio=keep_audio, regenerate=regenerate, audio_prompt=audio_prompt,
                         audio_rate=audio_rate, crossfade=crossfade, start=start,
                         duration=duration, sample_rate=self.sample_rate,
                         channels=int(self.codec.channels))
        total = int(self.codec.num_frames(n))  # codec frames of the whole stretch
        width = self.width_for(duration, total)
        codes = self.generate_codes(source, start=start, duration=duration, total=total,
                                    width=width, seed=seed, options=options, progress=progress,
                                    prompt=None if edit is None else edit.prompt(
                                        self.codec, total, self.device), text=text)
        wav = self.decode_codes(codes, n, window=width, name=name, progress=progress)
        return (wav if edit is None else edit.splice(wav, self.sample_rate)), self.sample_rate

    def text_conditioning(self, prompt: str | None, negative_prompt: str | None, *,
                          video=None, duration: float | None = None) -> TextPrompt | None:
        """The encoded ``prompt`` and ``negative_prompt`` (``None`` when neither is given), after
        refusing, in one sentence: a prompt for a recipe without a text encoder, no video and
        no prompt, and text-only generation without a ``duration``."""
        if (prompt is not None or negative_prompt is not None) and self.text_encoder is None:
            raise GenerationError(f"{self.recipe.source} has no text_encoder, so it cannot follow "
                                  f"a prompt; use a recipe with one or leave out the prompt")
        if video is None:
            if prompt is None:
                raise GenerationError("give a video, a prompt, or both")
            if duration is None:
                raise GenerationError("generating from a prompt alone needs a duration "
                                      "(--duration SECONDS)")
            if not duration > 0:
                raise GenerationError(f"--duration must be positive, got {duration:g}")
        if prompt is None and negative_prompt is None:
            return None
        encode = lambda text: None if text is None else self.text_encoder.encode([text])  # noqa: E731
        return TextPrompt(prompt=encode(prompt), negative=encode(negative_prompt))

    def width_for(self, duration: float, total: int) -> int:
        """Frames of each generation window for a clip of ``duration`` s and ``total`` frames:
        :attr:`window_frames`, or ``total`` when the clip fits one window (a few frames over
        the window's length are fine)."""
        return total if duration <= self.window + WINDOW_TOLERANCE else self.window_frames

    def decode_codes(self, codes: Tensor, length: int, *, window: int, name: str = "the video",
                     progress: bool = False) -> Tensor:
        """``codes [k, L]`` decoded to ``[c, length]`` float32 on the CPU, in windows of
        ``window`` frames (:func:`decode_in_windows`, :meth:`width_for`); non-finite samples
        (damaged weights) raise :class:`GenerationError` naming ``name``."""
        with stage("codec decode"):
            wav = self.kept_candidate_wav(codes, length, window=window)
            if wav is None:
                wav = decode_in_windows(self.codec, codes[None].to(self.device), length,
                                        window=window, context=self.decode_context_frames,
                                        progress=progress)[0]
        wav = wav.cpu()
        if not bool(torch.isfinite(wav).all()):
            bad = int((~torch.isfinite(wav)).sum())
            raise GenerationError(
                f"the model produced {bad} non-finite samples (NaN or inf) for {name}: its weights "
                f"are probably damaged; check the fuser and generator weights of {self.recipe.source}")
        return wav

    def kept_candidate_wav(self, codes: Tensor, length: int, *, window: int) -> Tensor | None:
        """The waveform ``[c, length]`` of ``codes [k, L]`` kept from the reranker's candidate
        decoding (:meth:`sample_window`), or None: kept only when those very codes were decoded
        in a call of their own and :func:`decode_in_windows` would decode them in one call too,
        so it is exactly the decode it saves. It is handed out once."""
        kept, self._kept_candidate = self._kept_candidate, None
        if kept is None or not one_decode_call(codes.shape[-1], window=window,
                                               context=self.decode_context_frames):
            return None
        kept_codes, wav = kept
        if kept_codes.shape != codes.shape or not torch.equal(kept_codes, codes.to(kept_codes.device)):
            return None
        return fit_length(wav, length)

    def sampling_options(self, *, candidates: int | None = None, steps=None,
                         cfg: float | None = None, temperature: float | None = None,
                         precision: str | None = None) -> dict:
        """The keyword options of :func:`v2a.sampler.sample` but ``seed`` (each window has its
        own): those given, the recipe's ``sampling`` values (:func:`v2a.sampler.recipe_sampling`)
        for the rest; ``candidates`` below 1 is refused in one sentence."""
        options = recipe_sampling(self.recipe.sampling)
        del options["seed"]
        given = dict(steps=steps, precision=precision or None,
                     candidates=None if candidates is None else int(candidates),
                     temperature=None if temperature is None else float(temperature),
                     cfg_scale=None if cfg is None else float(cfg))
        options.update({name: value for name, value in given.items() if value is not None})
        if options["candidates"] < 1:
            raise GenerationError(f"--candidates must be at least 1, got {options['candidates']}")
        return options

    def generate_codes(self, source: Path | Video, *, start: float, duration: float, total: int,
                       width: int, seed: int, options: dict, progress: bool = False,
                       prompt: Prompt | None = None, text: TextPrompt | None = None) -> Tensor:
        """Codes ``[k, total]`` of the stretch ``[start, start + duration]`` s of ``source``, in
        windows of ``width`` frames (:func:`window_starts`, a quarter of a window overlapping):
        each window is conditioned on its own stretch of video and continues the codes already
        generated in its overlap (a prompt of known positions); window ``w`` samples with
        :func:`window_seed` ``(seed, w)``; ``options`` go to :func:`v2a.sampler.sample`.

        ``prompt``: codes to keep, ``codes`` and ``known`` ``[1, k, total]``; the known
        positions are given to each window's prompt with its overlap, so the result holds
        exactly ``prompt.codes`` wherever ``prompt.known`` (a window known throughout is not
        sampled). ``source`` None: no video (``text`` alone conditions every window)."""
        frame_rate = float(self.codec.frame_rate)
        shape = (self.codec.n_codebooks, total)
        codes = torch.zeros(shape, dtype=torch.int64) if prompt is None else \
            prompt.codes[0].clone().long()  # [k, L]
        fixed = torch.zeros(shape, dtype=torch.bool) if prompt is None else prompt.known[0].bool()
        done = 0  # frames generated so far: [0, done)
        starts = window_starts(total, width, overlap=width // 4)
        for w, first in enumerate(tqdm(starts, desc="windows", unit="window", leave=False,
                                       disable=not progress or len(starts) < 2)):
            t0 = first / frame_rate
            span = min(width / frame_rate, duration - t0)
            known = fixed[None, :, first:first + width].clone()
            known[..., :max(0, done - first)] = True
            done = first + width
            if bool(known.all()):
                continue  # nothing to generate in this window
            window_prompt = Prompt(codes[None, :, first:done].clone(), known) \
                if bool(known.any()) else None
            codes[:, first:done] = self.sample_window(
                source, start=start + t0, duration=span, width=width, prompt=window_prompt,
                seed=window_seed(seed, w), options=options, text=text)
        return codes

    def sample_window(self, source: Path | Video | None, *, start: float, duration: float,
                      width: int, prompt: Prompt | None, seed: int, options: dict,
                      text: TextPrompt | None = None) -> Tensor:
        """Codes ``[k, width]`` of one window: the video's ``duration`` s from ``start``
        encoded (none when ``source`` is None) and fused, with ``text`` when given, into the
        conditioning of ``width`` frames, ``options["candidates"]`` candidates sampled
        (continuing ``prompt``; guidance against ``text.negative`` when given), and the one
        the reranker prefers kept (the first without a reranker, video or second candidate)."""
        frame_rate = float(self.codec.frame_rate)
        streams = {} if source is None else self.encode_video(source, duration, start=start)
        fused = {k: streams[k] for k in self.fuser.stream_dims} if streams else {}
        textual = {} if text is None or text.prompt is None else {"text": text.prompt}
        if source is None:
            textual["drop_video"] = torch.ones(1, dtype=torch.bool, device=self.device)
        with stage("fuser"):
            condition = self.fuser(fused, frame_rate=frame_rate, num_frames=width, **textual)
            negative = None
            if text is not None and text.negative is not None:
                negative = self.fuser(fused, frame_rate=frame_rate, num_frames=width,
                                      text=text.negative,
                                      drop_video=torch.ones(1, dtype=torch.bool, device=self.device))
        with stage("sampling"):
            window_codes = sample(self.generator, condition, num_frames=width, prompt=prompt,
                                  seed=seed, negative=negative, **options)  # [candidates, k, width]
        best = 0
        if options["candidates"] > 1 and self.reranker is not None and streams:
            with stage("candidate decode"):
                wavs, alone = self.decode_candidates.decode(window_codes)
            with stage("reranker"):
                best = self.rerank(wavs, streams)
            if alone[best]:  # exactly its own decode: kept_candidate_wav may save decoding it again
                self._kept_candidate = (window_codes[best].clone(), wavs[best].clone())
        return window_codes[best].cpu()

    def encode_video(self, video: str | Path | Video, duration: float, *,
                     start: float = 0.0) -> dict[str, FeatureSequence]:
        """:func:`v2a.features.encode_video` with this model's visual encoders (the same two
        steps, the video read and each encoder, marked as stages: :mod:`v2a.generate.stages`)."""
        streams = {}
        for name, encoder in self.encoders.items():
            with stage("video decode"):
                frames, times = window_frames(video, frame_request(encoder), start=start,
                                              duration=duration)
            with stage(f"visual encoder {name}"):
                streams[name] = encode_frames(encoder, frames[None], times, device=self.device)
        return streams

    def rerank(self, wavs: Tensor, streams: dict[str, FeatureSequence]) -> int:
        """Index of the candidate ``wavs [b, c, n]`` the reranker prefers (given to it at its
        own ``sample_rate``, :func:`v2a.media.resample_audio`)."""
        rate = int(self.reranker.sample_rate)
        if rate != self.sample_rate:
            wavs = resample_audio(wavs, self.sample_rate, rate)
        video = {name: streams[name] for name in self.reranker.video_streams}
        return int(self.reranker.select(wavs[None], video)[0])


def _warn_if_untrained(recipe: Recipe, warn: Callable[[str], None]) -> None:
    """Warn that the fuser and/or generator are randomly initialised when the recipe names no
    ``weights`` for them (and no training run gives them)."""
    untrained = [slot for slot in RUN_SLOTS if is_random(recipe.choice(slot).as_data().get("weights"))]
    if untrained:
        warn(f"no --checkpoint and no {untrained[0]}.weights in the recipe: the "
             f"{' and '.join(untrained)} {'are' if len(untrained) > 1 else 'is'} randomly "
             f"initialised, so the sound is noise (use this only to test the plumbing)")
