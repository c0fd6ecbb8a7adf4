"""Generation: ``v2a generate --recipe R [--checkpoint RUN] VIDEO [VIDEO ...]`` and its Python API.

Two lines from a video to its sound::

    model = VideoToAudio.from_recipe(load_recipe("tiny"))        # + checkpoint="runs/NAME"
    audio, sample_rate = model.generate("clip.mp4", seed=0)      # [c, n] at the codec's rate

The video may also be frames in memory: ``model.generate(frames, fps=25.0)`` with ``frames`` a
uint8 tensor ``[t, h, w, 3]`` (RGB bytes, as video readers return them) or a float tensor
``[t, 3, h, w]`` in [0, 1] (v2a's own layout), frame ``i`` shown from ``i / fps`` s; or a
:class:`v2a.media.Video` (what :func:`v2a.media.load_video` returns; its times are counted from
its first frame).

What :meth:`VideoToAudio.generate` does, for one video:

1. sample the video once per visual encoder, at the encoder's ``fps`` and ``frame_size``: a file
   is decoded with :func:`v2a.media.load_video`, frames in memory go through
   :func:`v2a.media.resample_video` (the same frame-on-screen rule and the same scaler);
2. encode each stream; the fuser turns them into the conditioning of
   ``num_frames = codec.num_frames(round(duration · sample_rate))`` codec frames;
3. sample ``candidates`` code sequences (:func:`v2a.sampler.sample`);
4. when ``candidates > 1`` and the recipe has a reranker, decode every candidate, resample it to
   the reranker's rate and keep the one it prefers (else the first);
5. decode the codes with the codec, window by window (:func:`decode_in_windows`: memory does
   not grow with the video), to exactly ``round(duration · sr)`` samples, so the sound lasts as
   long as the video (or the stretch ``start`` .. ``start + duration`` asked for).

``VideoToAudio.generate`` returns the model's raw output; ``v2a generate`` then applies the
output stage (:mod:`v2a.output_stage`: peak limiter, optional loudness) and writes the audio
file and the mp4 as one commit (:func:`write_outputs`), after checking every input and output
before any model is loaded (:func:`plan_jobs`, :class:`Outputs`; see docs/reliability.md).

The frozen components (codec, visual encoders, reranker) are built as the feature cache builds
them (:func:`v2a.recipe.build_frozen`, fixed seed), so random-init encoders match the ones a
training run saw. The fuser and generator come from a training run folder (``fuser.safetensors``
and ``generator.safetensors``, loaded strictly) or, without one, from their ``weights`` options
(a bundled model such as ``recipes/tiny.yaml`` names its files there); with neither they are
randomly initialised (for plumbing only: the sound means nothing), with a warning. The run's
``recipe.yaml`` must
agree with the recipe on what the weights mean (:data:`WEIGHT_SECTIONS`: codec, visual
encoders, fuser, generator; ``weights`` files by place or content; the fuser's and generator's
own ``weights``, which the run replaces, left out), else the run is refused in
one sentence naming the keys that differ; a run without ``recipe.yaml`` is used with a warning.

Videos longer than the recipe's window (``data.clip_seconds``): windows of the window's length
(in codec frames), consecutive ones overlapping by a quarter of it, the last one ending at the
video's end. Each window is conditioned on its own stretch of video; the codes already generated
in its overlap are given to it as a prompt (known positions, never changed), so the sampler
continues them rather than starting afresh; when ``candidates > 1`` the reranker picks the best
candidate of each window, which the next window continues. The windows' codes are stitched by
frame and decoded in windows with a second of context on either side, crossfaded where they
meet. Window 0 samples with ``seed``, window ``w`` with a seed derived from ``(seed, w)``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from v2a.errors import UserError
from v2a.features import encode_video
from v2a.media import MuxPlan, Video
from v2a.recipe import build_frozen

#: seconds a video may exceed the window (frame-rate rounding) and still be generated in one window
WINDOW_TOLERANCE = 0.05

#: The recipe sections that decide what a training run's fuser and generator weights mean.
WEIGHT_SECTIONS = ("codec", "visual_encoders", "fuser", "generator")


class GenerationError(UserError):
    """A video or an option that ``v2a generate`` cannot use (one sentence)."""


# -- the model --------------------------------------------------------------------------------


class VideoToAudio:
    """A recipe's codec, visual encoders, fuser, generator and (optional) reranker, ready to
    turn videos into audio. Build it with :meth:`from_recipe`."""

    def __init__(self, recipe, *, codec, encoders: dict, fuser, generator, reranker=None,
                 device: str | torch.device = "cpu"):
        self.recipe = recipe
        self.codec = codec
        self.encoders = encoders  # stream name → VisualEncoder
        self.fuser = fuser
        self.generator = generator
        self.reranker = reranker
        self.device = torch.device(device)

    @classmethod
    def from_recipe(cls, recipe, checkpoint: str | Path | None = None, *,
                    device: str | torch.device = "cpu", warn=None) -> VideoToAudio:
        """Build the recipe's components; load the fuser and generator of the training run
        folder ``checkpoint`` (strictly), or keep them randomly initialised when it is None.

        A run whose ``recipe.yaml`` differs from ``recipe`` in :data:`WEIGHT_SECTIONS` is refused
        (:func:`check_run_recipe`); ``warn(text)`` receives the warnings (default: stderr)."""
        from v2a.weights import is_random, load_checkpoint, load_into

        for slot in ("codec", "fuser", "generator"):
            recipe.choice(slot)  # one sentence when the recipe lacks it
        if not recipe.visual_streams:
            raise GenerationError(f"{recipe.source} has no visual encoder; generation needs one")
        warn = warn or _warn
        run = None if checkpoint is None else Path(checkpoint)
        if run is not None:  # the run is checked before anything is built (or downloaded)
            if not run.is_dir():
                raise GenerationError(f"the checkpoint {run} is not a training run folder (it should "
                                      f"hold fuser.safetensors and generator.safetensors)")
            for slot in ("fuser", "generator"):
                if not (run / f"{slot}.safetensors").is_file():
                    raise GenerationError(f"the checkpoint {run} has no {slot}.safetensors; is it a "
                                          f"finished generator training run?")
            check_run_recipe(run, recipe, warn)
        built = {slot: build_frozen(recipe.choice(slot)) for slot in ("codec", "fuser", "generator")}
        encoders = {name: build_frozen(recipe.choice(f"visual_encoders.{name}"))
                    for name in recipe.visual_streams}
        reranker = build_frozen(recipe.choice("reranker")) if recipe.has("reranker") else None
        missing = sorted(set(built["fuser"].stream_dims) - set(encoders))
        if missing:
            raise GenerationError(f"{recipe.source}: the fuser reads stream {missing[0]!r}, which no "
                                  f"visual encoder of the recipe provides")
        if run is not None:
            for slot in ("fuser", "generator"):
                path = run / f"{slot}.safetensors"
                load_into(built[slot], load_checkpoint(path), path, slot)
        untrained = [slot for slot in ("fuser", "generator")
                     if is_random(recipe.choice(slot).as_data().get("weights"))]
        if run is None and untrained:  # said once all is built, not before an error that stops it
            warn(f"v2a: warning: no --checkpoint and no {untrained[0]}.weights in the recipe: the "
                 f"{' and '.join(untrained)} {'are' if len(untrained) > 1 else 'is'} randomly "
                 f"initialised, so the sound is noise (use this only to test the plumbing)")
        model = cls(recipe, codec=built["codec"], encoders=encoders, fuser=built["fuser"],
                    generator=built["generator"], reranker=reranker)
        return model.to(device)

    def to(self, device: str | torch.device) -> VideoToAudio:
        self.device = torch.device(device)
        for module in self._modules():
            module.to(self.device).eval()
        return self

    def _modules(self):
        yield from self.components.values()

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        """The model's components by recipe slot (``codec``, ``visual_encoders.<stream>``, ...)."""
        found = {"codec": self.codec, "fuser": self.fuser, "generator": self.generator,
                 **{f"visual_encoders.{name}": enc for name, enc in self.encoders.items()}}
        if self.reranker is not None:
            found["reranker"] = self.reranker
        return found

    @property
    def window(self) -> float:
        return float(self.recipe.data.clip_seconds)

    @property
    def sample_rate(self) -> int:
        return int(self.codec.sample_rate)

    # -- generation ----------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, video: str | Path | Tensor | Video, *, fps: float | None = None,
                 start: float = 0.0, duration: float | None = None, seed: int | None = None,
                 candidates: int | None = None, steps=None, cfg: float | None = None,
                 temperature: float | None = None, precision: str | None = None,
                 progress: bool = False) -> tuple[Tensor, int]:
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

        The result is the model's raw output (no limiting; see :mod:`v2a.output_stage`); a
        model that produces non-finite samples (damaged weights) raises :class:`GenerationError`.
        """
        from tqdm import tqdm

        from v2a.media import probe
        from v2a.sampler import Prompt, sample

        sampling = self.recipe.sampling
        seed = sampling.seed if seed is None else int(seed)
        candidates = sampling.candidates if candidates is None else int(candidates)
        if candidates < 1:
            raise GenerationError(f"--candidates must be at least 1, got {candidates}")
        source = video_source(video, fps)
        if isinstance(source, Video):
            name, length = "the frames", source.duration
        else:
            info = probe(source)
            if not info.has_video:
                raise GenerationError(f"{source} has no video stream")
            name, length = str(source), info.video_duration or info.duration
        if not 0 <= start < length:
            raise GenerationError(f"--start {start:g} s is not inside {name} ({length:.2f} s)")
        if duration is None:
            duration = length - start
        elif not duration > 0:
            raise GenerationError(f"--duration must be positive, got {duration:g}")
        elif start + duration > length + WINDOW_TOLERANCE:
            raise GenerationError(f"{start:g} s + --duration {duration:g} s ends after {name} "
                                  f"({length:.2f} s)")
        sr = self.sample_rate
        n = round(duration * sr)
        total = int(self.codec.num_frames(n))  # codec frames of the whole stretch
        frame_rate = float(self.codec.frame_rate)
        width = self.window_frames
        if duration <= self.window + WINDOW_TOLERANCE:
            width = total  # one window (a few frames over the window's length are fine)
        options = dict(
            steps=sampling.steps if steps is None else steps,
            temperature=sampling.temperature if temperature is None else float(temperature),
            anneal_temperature=sampling.anneal_temperature, top_k=sampling.top_k,
            top_p=sampling.top_p, cfg_scale=sampling.cfg_scale if cfg is None else float(cfg),
            candidates=candidates, precision=precision or sampling.precision,
        )
        codes = torch.zeros(self.codec.n_codebooks, total, dtype=torch.int64)  # [k, L]
        done = 0  # frames generated so far: [0, done)
        starts = window_starts(total, width, overlap=width // 4)
        for w, first in enumerate(tqdm(starts, desc="windows", unit="window", leave=False,
                                       disable=not progress or len(starts) < 2)):
            # this window's video, its conditioning, and the codes of the overlap as its prompt
            t0 = first / frame_rate
            span = min(width / frame_rate, duration - t0)
            streams = self.encode_video(source, span, start=start + t0)
            condition = self.fuser.fuse({k: streams[k] for k in self.fuser.stream_dims},
                                        frame_rate=frame_rate, num_frames=width)
            known = torch.zeros(1, *codes.shape[:1], width, dtype=torch.bool)
            known[..., :max(0, done - first)] = True
            prompt = Prompt(codes[None, :, first:first + width].clone(), known) if done else None
            window_codes = sample(self.generator, condition, num_frames=width, prompt=prompt,
                                  seed=window_seed(seed, w), **options).cpu()  # [B, k, width]
            best = 0
            if candidates > 1 and self.reranker is not None:
                wavs = self.codec.decode(window_codes.to(self.device)).float()
                best = self.rerank(wavs, streams)
            codes[:, first:first + width] = window_codes[best]
            done = first + width
        wav = decode_in_windows(self.codec, codes[None].to(self.device), n, window=width,
                                context=self.decode_context_frames, progress=progress)
        wav = wav[0].cpu()
        if not bool(torch.isfinite(wav).all()):
            bad = int((~torch.isfinite(wav)).sum())
            raise GenerationError(
                f"the model produced {bad} non-finite samples (NaN or inf) for {name}: its weights "
                f"are probably damaged; check the fuser and generator weights of {self.recipe.source}")
        return wav, sr

    @property
    def window_frames(self) -> int:
        """Codec frames of one generation window (``data.clip_seconds``)."""
        return int(self.codec.num_frames(round(self.window * self.sample_rate)))

    @property
    def decode_context_frames(self) -> int:
        """Frames of context decoded on each side of a window of codes (one second): the codec's
        decoder sees its neighbourhood, so window seams do not show."""
        return max(1, round(float(self.codec.frame_rate)))

    def encode_video(self, video: str | Path | Video, duration: float, *,
                     start: float = 0.0) -> dict:
        """:func:`v2a.features.encode_video` with this model's visual encoders."""
        return encode_video(self.encoders, video, duration, start=start, device=self.device)

    def rerank(self, wavs: Tensor, streams: dict) -> int:
        """Index of the candidate ``wavs [b, c, n]`` the reranker prefers."""
        import torchaudio.functional as AF

        rate = int(self.reranker.sample_rate)
        if rate != self.sample_rate:
            wavs = AF.resample(wavs, self.sample_rate, rate)
        video = {name: streams[name] for name in self.reranker.video_streams}
        return int(self.reranker.select(wavs[None], video)[0])


# -- the video: a file or frames in memory ---------------------------------------------------


def video_source(video: str | Path | Tensor | Video, fps: float | None = None) -> Path | Video:
    """What :meth:`VideoToAudio.generate` reads: a file's path as it is, or frames in memory as
    a :class:`~v2a.media.Video` on the CPU whose times start at 0.

    * ``str`` / ``Path``: a video file (``fps`` must be None: the file has its frame times);
    * uint8 ``[t, h, w, 3]``: RGB bytes, frame ``i`` shown from ``i / fps`` s;
    * float ``[t, 3, h, w]`` in [0, 1]: the same, in v2a's layout;
    * a :class:`~v2a.media.Video` (float or uint8 ``[t, 3, h, w]``): its frames at its own times,
      counted from its first frame; ``fps``, if given, must be its own.
    """
    from einops import rearrange

    if isinstance(video, (str, Path)):
        if fps is not None:
            raise GenerationError(f"fps is given for frames in memory; the file {video} has its "
                                  "own frame times")
        return Path(video)
    if isinstance(video, Video):
        if fps is not None and float(fps) != video.fps:
            raise GenerationError(f"fps={fps:g} was given for a Video at {video.fps:g} fps; leave "
                                  "fps out (a Video has its own frame times)")
        frames, times, frame_times, rate = video.frames, video.times, video.frame_times, video.fps
    elif isinstance(video, Tensor):
        if fps is None or not float(fps) > 0:
            raise GenerationError("frames given as a tensor need their frame rate, a positive fps "
                                  "(e.g. generate(frames, fps=25.0))")
        if video.dim() == 4 and video.dtype == torch.uint8 and video.shape[-1] == 3:
            frames = rearrange(video, "t h w c -> t c h w")
        elif video.dim() == 4 and video.is_floating_point() and video.shape[1] == 3:
            frames = video
        else:
            raise GenerationError(f"frames must be a uint8 tensor [t, h, w, 3] or a float tensor "
                                  f"[t, 3, h, w] in [0, 1], not {video.dtype} {list(video.shape)}")
        rate = float(fps)
        times = frame_times = torch.arange(video.shape[0], dtype=torch.float64) / rate
    else:
        raise GenerationError(f"a video is a file's path, a tensor of frames or a v2a.media.Video, "
                              f"not {type(video).__name__}")
    if frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
        raise GenerationError(f"the frames must be [t, 3, h, w] with t > 0, not {list(frames.shape)}")
    if frames.is_floating_point() and not (0.0 <= float(frames.min()) and float(frames.max()) <= 1.0):
        raise GenerationError(f"float frames must lie in [0, 1], these span {float(frames.min()):g} "
                              f"to {float(frames.max()):g} (give bytes as uint8 [t, h, w, 3])")
    first = float(times[0])
    return Video(frames=frames.cpu(), times=times.double().cpu() - first,
                 frame_times=frame_times.double().cpu() - first, fps=rate)


# -- a training run's recipe ------------------------------------------------------------------


def check_run_recipe(run: Path, recipe, warn=None) -> None:
    """Refuse the training run folder ``run`` when its ``recipe.yaml`` differs from ``recipe`` in
    :data:`WEIGHT_SECTIONS`, in one sentence naming up to three differing keys and suggesting
    ``--recipe RUN/recipe.yaml``. ``weights`` options differ only when they name other weights
    (:func:`same_weights`). Without a readable ``recipe.yaml`` it only warns."""
    from v2a.recipe import read_saved_recipe, recipe_differences

    warn = warn or _warn
    saved = read_saved_recipe(run / "recipe.yaml")
    if saved is None:
        warn(f"v2a: warning: {run} has no readable recipe.yaml, so its weights cannot be checked "
             f"against {recipe.source}")
        return
    own = recipe.as_data()
    differ = []
    for key, then, now in recipe_differences({s: saved.get(s) for s in WEIGHT_SECTIONS},
                                             {s: own.get(s) for s in WEIGHT_SECTIONS},
                                             ignore=("fuser.weights", "generator.weights")):
        if key.rpartition(".")[2] == "weights" and isinstance(then, str) and isinstance(now, str):
            same = same_weights(then, now)
            if same is None:
                warn(f"v2a: warning: cannot tell whether {key} {then!r} of {run} and {now!r} of "
                     f"the recipe are the same weights (a file is missing here)")
            if same is not False:
                continue
        differ.append(f"{key}: {then!r} in the run, {now!r} in the recipe")
    if differ:
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise GenerationError(
            f"the checkpoint {run} was trained with another recipe ({', '.join(differ[:3])}{more}); "
            f"generate with --recipe {run / 'recipe.yaml'}")


def same_weights(a: str, b: str) -> bool | None:
    """Whether two ``weights`` options name the same weights: the same keyword (``none``,
    ``pretrained``), or local files at the same place or with the same content; None when it
    cannot be told (a file is missing here)."""
    from v2a.cache import file_digest
    from v2a.weights import NONE, PRETRAINED

    if a.lower() in (NONE, PRETRAINED) or b.lower() in (NONE, PRETRAINED):
        return a.lower() == b.lower()
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.resolve() == pb.resolve():
        return True
    if not (pa.is_file() and pb.is_file()):
        return None
    return file_digest(pa) == file_digest(pb)


# -- windows --------------------------------------------------------------------------------


def window_starts(total: int, width: int, *, overlap: int) -> list[int]:
    """First frames of the windows of ``width`` frames covering ``total`` frames, consecutive
    windows sharing at least ``overlap`` frames; the last window ends at ``total``."""
    if total <= width:
        return [0]
    hop = max(1, width - overlap)
    return list(range(0, total - width, hop)) + [total - width]


def window_seed(seed: int, window: int) -> int:
    """The sampling seed of window ``window`` (window 0 uses ``seed`` itself)."""
    if window == 0:
        return int(seed)
    import numpy as np

    return int(np.random.SeedSequence([int(seed) % 2**63, int(window)]).generate_state(1)[0])


def fit_length(wavs: Tensor, n: int) -> Tensor:
    """Trim or zero-pad the last axis to exactly ``n`` samples."""
    if wavs.shape[-1] >= n:
        return wavs[..., :n]
    return torch.nn.functional.pad(wavs, (0, n - wavs.shape[-1]))


ALIGN = 8


def _align_up(frames: int) -> int:
    return -(-max(0, int(frames)) // ALIGN) * ALIGN


def decode_in_windows(codec, codes: Tensor, length: int, *, window: int, context: int,
                      fade: int | None = None, progress: bool = False) -> Tensor:
    """``codec.decode(codes, length=length)`` for ``codes [b, k, L]``, one window of ``window``
    frames at a time, so that memory does not grow with the video.

    Each window is decoded with ``context`` frames of its neighbours on either side (a decoder's
    output near a frame depends on the frames around it), and neighbouring windows overlap by
    ``fade`` frames (default ``context // 2``), crossfaded with complementary sin²/cos² ramps (they
    sum to one, so where the two decodes agree the result is either of them). Codes no longer than
    one window plus its context are decoded at once."""
    total = codes.shape[-1]
    # windows start on multiples of ALIGN frames: a decoder whose output depends on the absolute
    # frame index modulo a small power of two (a phase initialisation from frame times, as the
    # spectral codec's Griffin-Lim) then decodes each window as it decodes the whole sequence
    window, context = _align_up(window), _align_up(context)
    fade = min(context, _align_up(context // 2) if fade is None else fade)
    if total <= window + 2 * context:
        return fit_length(codec.decode(codes, length=length).float(), length)
    from tqdm import tqdm

    samples = codec.num_samples
    out: Tensor | None = None
    firsts = list(range(0, total, window))
    for first in tqdm(firsts, desc="decoding", unit="window", leave=False, disable=not progress):
        last = min(total, first + window)
        lo, hi = max(0, first - fade // 2), min(total, last + fade - fade // 2)
        a, b = max(0, lo - context), min(total, hi + context)
        wav = codec.decode(codes[..., a:b]).float()  # frame a at sample 0
        begin, end = samples(lo), min(samples(hi), length)
        if end <= begin:
            break
        piece = fit_length(wav[..., samples(lo - a):], end - begin)
        if out is None:
            out = wav.new_zeros(*wav.shape[:-1], length)
        ramp = min(samples(fade), piece.shape[-1] // 2)
        weight = torch.ones(piece.shape[-1], dtype=piece.dtype, device=piece.device)
        if ramp and first > 0:  # fade in where the previous window fades out
            rise = torch.sin(torch.linspace(0, torch.pi / 2, ramp, device=piece.device)) ** 2
            weight[:ramp] = rise
        if ramp and last < total:
            weight[-ramp:] = torch.cos(torch.linspace(0, torch.pi / 2, ramp, device=piece.device)) ** 2
        out[..., begin:end] += piece * weight
    return out


def _warn(text: str) -> None:
    print(text, file=sys.stderr)


# -- the command --------------------------------------------------------------------------------


#: What ``-o FILE`` may end in: the mp4, or the audio written beside it.
OUTPUT_SUFFIXES = (".mp4", ".wav", ".flac")


def names_a_file(output: Path) -> bool:
    """Whether ``-o output`` names one video's output files rather than a folder: it ends in a
    media suffix (``out.mp4``, ``out.wav``) and is not an existing folder."""
    from v2a.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES

    return output.suffix.lower() in (*VIDEO_SUFFIXES, *AUDIO_SUFFIXES) and not output.is_dir()


def output_paths(source: Source, output: Path | None, audio_format: str = "wav"
                 ) -> tuple[Path, Path]:
    """(audio, mp4) for ``source`` (named ``<stem>`` after :attr:`Source.stem`): with ``output`` a file name (:func:`names_a_file`), that name
    with the suffixes ``.<wav|flac>`` and ``.mp4``; with ``output`` a folder,
    ``<OUT>/<stem>.<wav|flac>`` and ``<OUT>/<stem>.mp4``; else ``<stem>.v2a.<wav|flac>`` and
    ``<stem>.v2a.mp4`` beside the video."""
    stem = source.stem
    if output is None:
        return (source.video.with_name(f"{stem}.v2a.{audio_format}"),
                source.video.with_name(f"{stem}.v2a.mp4"))
    if names_a_file(output):
        return output.with_suffix(f".{audio_format}"), output.with_suffix(".mp4")
    return output / f"{stem}.{audio_format}", output / f"{stem}.mp4"


def output_audio_format(output: Path | None, given: str | None) -> str:
    """The audio format: from ``-o out.wav`` / ``-o out.flac``, else ``--audio-format`` (wav)."""
    if output is not None and names_a_file(output):
        if output.suffix.lower() not in OUTPUT_SUFFIXES:
            raise GenerationError(f"-o {output}: v2a generate writes an .mp4 and a .wav or .flac "
                                  f"beside it; end the name in .mp4, .wav or .flac, or give a folder")
        own = output.suffix.lower()[1:]
        if own != "mp4":
            if given not in (None, own):
                raise GenerationError(f"-o {output} asks for {own} audio but --audio-format asks "
                                      f"for {given}; give one of them")
            return own
    return given or "wav"


@dataclass(frozen=True)
class Source:
    """One thing to generate: a video file, the stretch of it (``start``, ``duration`` s; None:
    to the end) and the stem its outputs are named after."""

    video: Path
    start: float = 0.0
    duration: float | None = None
    name: str = ""

    @property
    def stem(self) -> str:
        return self.name or self.video.stem


def _clip_stem(clip, video: Path) -> str:
    """Output stem of a manifest row: the video's stem, with ``@start`` when the row does not start
    at 0, or the row's own ``id`` (slashes made underscores) when the manifest gives one."""
    from v2a.data import default_id

    if clip.id != default_id(clip.path, clip.start):
        return clip.id.replace("/", "_").replace("\\", "_")
    return video.stem + (f"@{clip.start:g}" if clip.start else "")


def is_v2a_output(path: Path) -> bool:
    """Whether ``path`` is a file v2a wrote: a temporary, an output named ``<stem>.v2a.<ext>``, or a
    file whose metadata says v2a generated it (:data:`v2a.media.GENERATED_BY`)."""
    from v2a.files import is_temporary
    from v2a.media import generated_by_v2a

    return is_temporary(path) or path.stem.endswith(".v2a") or generated_by_v2a(path)


def expand_inputs(paths: list[Path], notes: list[str] | None = None) -> list[Source]:
    """Videos named, videos inside folders named (never v2a's own outputs or temporaries, which
    are skipped with a note), and the clips CSV/JSONL manifests list (their ``start`` and
    ``duration`` honoured)."""
    from v2a.data import read_manifest
    from v2a.media import VIDEO_SUFFIXES, media_files

    sources: list[Source] = []
    for path in paths:
        if path.suffix.lower() in (".csv", ".jsonl") and path.is_file():
            for clip in read_manifest(path):
                video = clip.resolve(path.parent)
                sources.append(Source(video, clip.start, clip.duration, _clip_stem(clip, video)))
        elif path.is_dir():
            found = media_files([path], VIDEO_SUFFIXES)
            ours = [f for f in found if is_v2a_output(f)]
            if ours and notes is not None:
                shown = ", ".join(f.name for f in ours[:3]) + (", ..." if len(ours) > 3 else "")
                notes.append(f"{path}: left out {len(ours)} file(s) v2a wrote ({shown})")
            found = [f for f in found if f not in ours]
            if not found:
                raise GenerationError(f"the folder {path} holds no video" + (
                    " besides v2a's own outputs" if ours else ""))
            sources += [Source(f) for f in found]
        else:
            sources.append(Source(path))
    return sources


@dataclass
class Job:
    """One video's outputs, planned before any model is loaded."""

    source: Source
    wav: Path
    mp4: Path
    plan: MuxPlan | None = None  # what muxing will do, decided by :func:`plan_jobs`
    replaces: bool = False  # outputs exist and --overwrite replaces them

    @property
    def video(self) -> Path:
        return self.source.video


def _existing_folder(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(folders: set[Path], needed: dict[Path, int]) -> None:
    """Refuse, in one sentence, output folders that cannot be created or written, or whose file
    system has less free space than the outputs planned there need (``needed``: bytes by folder)."""
    import shutil

    free: dict[int, tuple[Path, int, int]] = {}  # file system → (a folder on it, free, needed)
    for folder in sorted(folders):
        base = _existing_folder(folder)
        if not base.is_dir():
            raise GenerationError(f"cannot write into {folder}: {base} is a file, not a folder")
        statvfs = os.statvfs(base)
        if statvfs.f_flag & os.ST_RDONLY:
            raise GenerationError(f"cannot write into {folder}: {base} is on a read-only file system")
        if not os.access(base, os.W_OK | os.X_OK):
            raise GenerationError(f"cannot write into {folder}: permission denied on {base}")
        device = base.stat().st_dev
        _, have, want = free.get(device, (base, shutil.disk_usage(base).free, 0))
        free[device] = (base, have, want + needed.get(folder, 0))
    for base, have, want in free.values():
        if want > have:
            raise GenerationError(
                f"the outputs need about {want / 1e6:.0f} MB but {base} has {have / 1e6:.0f} MB "
                "free; free some space or write them elsewhere with -o")


def estimated_bytes(job: Job, sample_rate: int, channels: int) -> int:
    """A generous guess of the bytes ``job`` writes: 16-bit audio of the planned output's length
    (:attr:`v2a.media.MuxPlan.duration`), the video stream (the input file's size when copied,
    twice that when re-encoded) and AAC at 192 kbit/s."""
    seconds = job.plan.duration
    video_bytes = job.video.stat().st_size * (1 if job.plan.copy_video else 2)
    return int(seconds * sample_rate * channels * 2 + video_bytes + seconds * 24_000) + 65_536


def codec_format(recipe) -> tuple[int, int]:
    """The codec's sample rate and channels as its plug-in declares them from the recipe, without
    building it (48 kHz stereo, the most a codec here writes, when it does not declare them)."""
    from v2a.registry import default_registry

    choice = recipe.choice("codec")
    declared = default_registry().properties(choice.kind, choice.plugin, choice.config)
    return int(declared.get("sample_rate") or 48_000), int(declared.get("channels") or 2)


def plan_jobs(sources: list[Source], output: Path | None, audio_format: str,
              overwrite: bool) -> list[Job]:
    """The outputs of every source, checked before anything heavy runs: readable inputs with a
    video stream, no output that overwrites an input or another output, existing outputs only with
    ``overwrite``, and how each video stream will be muxed (copied or re-encoded)."""
    from v2a.media import MediaError, plan_mux

    if output is not None and names_a_file(output) and len(sources) > 1:
        raise GenerationError(f"-o {output} names the output of one video, but {len(sources)} "
                              f"videos were given; give a folder for their outputs")
    if output is not None and output.exists() and not output.is_dir() and not names_a_file(output):
        raise GenerationError(f"the output {output} is a file; give a folder")
    jobs, inputs = [], {s.video.resolve() for s in sources}
    for source in sources:
        if not source.video.is_file():
            raise GenerationError(f"{source.video} does not exist")
        wav, mp4 = output_paths(source, output, audio_format)
        for target in (wav, mp4):
            if target.resolve() in inputs:
                raise GenerationError(f"the output {target} would overwrite the input")
        jobs.append(Job(source=source, wav=wav, mp4=mp4))
    if len({j.wav.resolve() for j in jobs}) < len(jobs):
        raise GenerationError("two videos have the same name, so their outputs would collide; "
                              "give them different names or generate them into different folders")
    for job in jobs:  # every input readable, and its muxing known, before anything is written
        try:  # plan_mux probes the input: no video stream, a still picture, damage: one sentence
            job.plan = plan_mux(job.video, job.mp4, start=job.source.start,
                                duration=job.source.duration)
        except MediaError as exc:
            raise GenerationError(str(exc)) from None
        job.replaces = existing_outputs(job, overwrite)
    return jobs


def existing_outputs(job: Job, overwrite: bool) -> bool:
    """Whether ``job``'s outputs exist (and ``overwrite`` lets them be replaced). One of the pair
    alone, written by v2a, is a half pair from an older or interrupted run: it is done again. An
    existing output without ``overwrite`` is refused."""
    from v2a.files import journal_path
    from v2a.media import generated_by_v2a

    present = [p for p in (job.wav, job.mp4) if p.exists()]
    if not present:
        return False
    if journal_path(job.mp4).exists():
        return True  # a dead run's commit: finished under the lock (Outputs), then checked again
    if len(present) == 1 and generated_by_v2a(present[0]):
        return True
    if not overwrite:
        raise GenerationError(f"{present[0]} exists; pass --overwrite to replace it")
    return True


class Outputs:
    """The output side of a batch: folders made, each job's outputs locked
    (:class:`v2a.files.OutputLock`, refused in one sentence while another run writes them),
    commits a dead run decided finished (:func:`v2a.files.recover_commit`), stale temporaries
    removed. Leaving the context releases the locks and removes the folders it made if they stayed
    empty, so a run that fails before writing leaves nothing behind."""

    def __init__(self, jobs: list[Job], *, overwrite: bool):
        self.jobs, self.overwrite = jobs, overwrite
        self.made: list[Path] = []
        self.locks: list = []

    def __enter__(self) -> Outputs:
        from v2a.files import OutputLock, recover_commit, remove_stale_temporaries

        try:
            for folder in sorted({j.mp4.parent for j in self.jobs} | {j.wav.parent for j in self.jobs}):
                missing = []
                at = folder.absolute()
                while not at.exists():
                    missing.append(at)
                    at = at.parent
                folder.mkdir(parents=True, exist_ok=True)
                self.made += reversed(missing)
                remove_stale_temporaries(folder)
            for job in self.jobs:
                self.locks.append(OutputLock(job.mp4, what="writing").acquire())
                recover_commit(job.mp4)  # a pair a dead run had decided to commit
                job.replaces = existing_outputs(job, self.overwrite)  # again, now that it is ours
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for lock in self.locks:
            lock.release()
        self.locks = []
        for folder in reversed(self.made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty


def write_outputs(job: Job, audio: Tensor, sample_rate: int, notes=None) -> None:
    """Write ``job``'s audio file and mp4 as one commit: both are written as temporaries, then
    renamed together (:func:`v2a.files.commit_together`), so that after a failure or a kill the
    pair is either both new or both old."""
    from v2a.files import commit_together, staged_output
    from v2a.media import mux_audio, write_audio

    wav = audio.numpy()
    with staged_output(job.wav) as new_wav:
        write_audio(new_wav, wav, sample_rate)
        try:
            with staged_output(job.mp4) as new_mp4:
                mux_audio(job.video, wav, sample_rate, new_mp4, plan=job.plan,
                          start=job.source.start, duration=job.source.duration)
        except BaseException:
            new_wav.unlink(missing_ok=True)
            raise
    commit_together([(new_wav, job.wav), (new_mp4, job.mp4)], anchor=job.mp4)
