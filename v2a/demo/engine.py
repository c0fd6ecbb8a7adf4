"""What the web demo does, without the page: :class:`DemoEngine` turns one :class:`DemoRequest`
(an uploaded video and the settings of the page) into a :class:`DemoResult` (the mp4 with the
new sound, the audio file, a spectrogram with the detected onsets), through the engine of
``v2a generate``: :func:`v2a.generate.plan_jobs` checks the video and plans the outputs,
:meth:`VideoToAudio.generate` makes the sound, :func:`v2a.output_stage.apply_output_stage`
limits it as the command does by default, :func:`v2a.generate.write_outputs` writes the pair.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2a.demo.spectrogram import draw_spectrogram
from v2a.errors import UserError
from v2a.generate import (
    GenerationError,
    Outputs,
    Source,
    VideoToAudio,
    plan_jobs,
    write_outputs,
)
from v2a.generate.editing import DEFAULT_CROSSFADE, check_stretches, parse_stretches
from v2a.generate.errors import parse_steps
from v2a.media import MediaError, MediaInfo, probe
from v2a.metrics.onsets import detect_onsets
from v2a.output_stage import OutputStage, apply_output_stage
from v2a.recipe import Recipe, catalogue, load_recipe, require_runnable

#: The longest video the demo takes unless ``v2a demo --max-seconds`` says otherwise.
DEFAULT_MAX_SECONDS = 30.0
#: How long a generation's folder is kept (the page's copies of its files live in Gradio's cache,
#: which the page clears on the same schedule).
KEEP_RESULTS_SECONDS = 3600.0


class DemoError(UserError):
    """Something the demo's user can fix: the upload or a setting (one sentence, on the page)."""


class DemoOptionError(DemoError):
    """A ``v2a demo`` option that cannot be used (exit code 2, as for any usage error)."""

    exit_code = 2


@dataclass(frozen=True, kw_only=True)
class DemoRequest:
    """The page's settings for one generation. ``steps``: decoding steps per RVQ level as text
    (``"12,4,2"``; empty: the recipe's); ``cfg``, ``candidates``, ``seed``: None for the
    recipe's; ``prompt``, ``negative_prompt``: empty for none (a recipe with a text encoder
    only); ``regenerate``: empty, or the stretches (``"1.5-3"``, seconds) generated again in the
    video's own sound, which is kept elsewhere."""

    video: Path | None
    recipe: str
    steps: str = ""
    cfg: float | None = None
    candidates: int | None = None
    seed: int | None = None
    prompt: str = ""
    negative_prompt: str = ""
    regenerate: str = ""


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    """One generation's files (all in its own folder) and what the page says about them:
    ``onsets`` (seconds, as :func:`v2a.metrics.onsets.detect_onsets` finds them in the written
    audio), ``warnings`` (the model's and the output stage's, one sentence each)."""

    mp4: Path
    audio: Path
    spectrogram: Path
    onsets: tuple[float, ...]
    duration: float
    warnings: tuple[str, ...]

    @property
    def summary(self) -> str:
        times = ", ".join(f"{t:.2f}" for t in self.onsets) or "none"
        return (f"{self.duration:.2f} s of sound; {len(self.onsets)} onset(s) detected, at "
                f"{times} s")


@dataclass(frozen=True, kw_only=True)
class PageDefaults:
    """What the page shows for a recipe before the user changes it: its ``sampling`` values and
    whether it takes text prompts (it has a ``text_encoder``)."""

    steps: str
    cfg: float
    candidates: int
    seed: int
    takes_text: bool


def runnable_recipes() -> list[str]:
    """The shipped recipes that can run (not ``base: true``), by catalogue name."""
    return [entry.name for entry in catalogue() if not entry.base]


class DemoEngine:
    """The demo's recipes, models and generations. ``recipe``: the recipe ``v2a demo --recipe``
    gave (listed first, the default; None: the first shipped one); ``checkpoint``: a training
    run folder whose weights go with that recipe only; ``workdir``: where each generation gets
    a folder of its own; ``max_seconds``: the longest video taken; ``recipe_options``: keywords
    of :func:`v2a.recipe.load_recipe` (``random_weights``, ``allow_env``). Recipes are loaded and
    models built once, on first use, and kept. :meth:`generate` is not meant to run twice at
    once on one device (the page queues requests one at a time)."""

    def __init__(self, *, workdir: Path, recipe: str | None = None,
                 checkpoint: Path | None = None, device: str = "cpu",
                 max_seconds: float = DEFAULT_MAX_SECONDS, recipe_options: dict | None = None):
        if not (math.isfinite(max_seconds) and max_seconds > 0):
            raise DemoOptionError(f"--max-seconds must be a number of seconds above 0, not "
                                  f"{max_seconds:g}")
        self.workdir, self.device, self.max_seconds = Path(workdir), device, float(max_seconds)
        self.checkpoint, self.recipe_options = checkpoint, dict(recipe_options or {})
        shipped = runnable_recipes()
        self.given = recipe
        self.choices = ([recipe] if recipe is not None else []) + [
            name for name in shipped if name != recipe]
        if not self.choices:
            raise DemoOptionError("no recipe to run: give one with --recipe")
        self._recipes: dict[str, Recipe] = {}
        self._models: dict[str, VideoToAudio] = {}
        self._model_warnings: dict[str, list[str]] = {}  # said when built, repeated each time
        self._lock = threading.Lock()
        if recipe is not None:
            self.recipe(recipe)  # a bad --recipe is refused before the page starts

    @property
    def default_choice(self) -> str:
        return self.choices[0]

    def recipe(self, name: str) -> Recipe:
        """The loaded recipe ``name``, one of :attr:`choices` (refused in one sentence else)."""
        if name not in self.choices:
            raise DemoError(f"{name!r} is not one of the demo's recipes; pick one of the list")
        with self._lock:
            if name not in self._recipes:
                recipe = load_recipe(name, **self.recipe_options)
                require_runnable(recipe)
                self._recipes[name] = recipe
            return self._recipes[name]

    def defaults(self, name: str) -> PageDefaults:
        """What the page shows for recipe ``name`` (its ``sampling`` values)."""
        recipe = self.recipe(name)
        sampling = recipe.sampling
        return PageDefaults(steps=",".join(str(s) for s in sampling.steps),
                            cfg=float(sampling.cfg_scale),
                            candidates=int(sampling.candidates), seed=int(sampling.seed),
                            takes_text=recipe.has("text_encoder"))

    def model(self, name: str, warnings: list[str]) -> VideoToAudio:
        """The model of recipe ``name``, built on first use and kept; the warnings building it
        gave (an untrained model, a run without its recipe) are appended to ``warnings`` every
        time. The checkpoint goes with the recipe ``v2a demo --recipe`` gave."""
        recipe = self.recipe(name)
        with self._lock:
            if name not in self._models:
                checkpoint = self.checkpoint if name == self.given else None
                said: list[str] = []
                self._models[name] = VideoToAudio.from_recipe(
                    recipe, checkpoint, device=self.device, warn=said.append)
                self._model_warnings[name] = said
            warnings.extend(self._model_warnings[name])
            return self._models[name]

    def warm_up(self) -> list[str]:
        """Build the model of :attr:`default_choice` now (a bad checkpoint is refused before the
        page is served, and the first request does not wait); returns its warnings."""
        warnings: list[str] = []
        self.model(self.default_choice, warnings)
        return warnings

    def check_video(self, video: Path | None) -> MediaInfo:
        """The uploaded video, probed (not decoded): refused in one sentence when there is none,
        it cannot be read, or it lasts longer than :attr:`max_seconds`."""
        if video is None:
            raise DemoError("no video was uploaded; upload one, then press Generate")
        try:
            info = probe(video)
        except MediaError as exc:
            raise DemoError(str(exc)) from None
        if not info.has_video:
            raise DemoError(f"{Path(video).name} has no video stream; upload a video")
        if info.duration > self.max_seconds:
            raise DemoError(f"{Path(video).name} lasts {info.duration:.1f} s, longer than this "
                            f"demo's limit of {self.max_seconds:g} s; upload a shorter video")
        return info

    def remove_old_results(self, *, older_than: float = KEEP_RESULTS_SECONDS) -> list[Path]:
        """Remove the folders of generations made more than ``older_than`` seconds ago (by
        their modification time), so a long-running demo does not fill its disk; returns them."""
        now, removed = time.time(), []
        for folder in sorted(self.workdir.glob("result-*")):
            if folder.is_dir() and now - folder.stat().st_mtime > older_than:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def generate(self, request: DemoRequest) -> DemoResult:
        """Check ``request`` in one sentence per problem (:class:`DemoError`, or the
        :class:`~v2a.errors.UserError` of ``v2a generate``), then generate and write its files
        into a new folder below :attr:`workdir` (``result-<id>``; those older than
        :data:`KEEP_RESULTS_SECONDS` are removed first)."""
        info = self.check_video(request.video)
        video = Path(request.video)
        takes_text = self.recipe(request.recipe).has("text_encoder")
        prompt = request.prompt.strip() or None
        negative = request.negative_prompt.strip() or None
        if (prompt or negative) and not takes_text:
            raise DemoError(f"{request.recipe} has no text encoder, so it cannot follow a prompt; "
                            "clear the prompts, or pick a recipe with a text encoder")
        stretches = None
        if request.regenerate.strip():
            if not info.has_audio:
                raise DemoError(f"{video.name} has no sound of its own to keep around the stretch "
                                "to regenerate; clear the stretch, or upload a video with sound")
            stretches = check_stretches(parse_stretches(request.regenerate.strip()),
                                        info.duration)
        steps = parse_steps(request.steps, name="steps")
        self.remove_old_results()
        folder = self.workdir / f"result-{uuid.uuid4().hex[:12]}"
        source = Source(video=video, name=video.stem, prompt=prompt, negative_prompt=negative)
        jobs, _ = plan_jobs([source], folder, "wav", overwrite=False)
        job, warnings = jobs[0], []
        with Outputs(jobs, overwrite=False):
            model = self.model(request.recipe, warnings)
            try:
                audio, rate = model.generate(
                    video, prompt=prompt, negative_prompt=negative, seed=request.seed,
                    candidates=request.candidates, steps=steps, cfg=request.cfg,
                    keep_audio=video if stretches else None, regenerate=stretches,
                    crossfade=DEFAULT_CROSSFADE)
            except MediaError as exc:
                raise GenerationError(str(exc)) from None
            audio, report = apply_output_stage(audio, rate, OutputStage())
            if report.warning():
                warnings.append(report.warning())
            write_outputs(job, audio, rate)
        samples = audio.numpy()
        onsets = detect_onsets(samples, rate)
        picture = draw_spectrogram(samples, rate, onsets)
        spectrogram = folder / f"{video.stem}.spectrogram.png"
        picture.save(spectrogram)
        return DemoResult(mp4=job.mp4, audio=job.wav, spectrogram=spectrogram,
                          onsets=tuple(float(t) for t in np.asarray(onsets)),
                          duration=samples.shape[-1] / rate, warnings=tuple(warnings))
