"""What ``v2a generate`` does with its parsed arguments (:mod:`v2a.commands.generate` holds
the parser, which ``--help`` builds without importing the engine and torch)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from tqdm import tqdm

from v2a.generate.editing import check_edit_options, check_stretches, parse_stretches
from v2a.generate.errors import GenerationError, parse_steps
from v2a.generate.inputs import Source, expand_inputs
from v2a.generate.jobs import (
    Job,
    check_writable,
    codec_format,
    estimated_bytes,
    output_audio_format,
    plan_jobs,
    plan_text_job,
)
from v2a.generate.model import VideoToAudio
from v2a.generate.outputs import Outputs, write_outputs
from v2a.log import note, warn
from v2a.media import MediaError, probe
from v2a.output_stage import OutputStage, apply_output_stage
from v2a.recipe import Recipe, is_override, load_recipe, recipe_options, require_runnable
from v2a.resources import check_resources, estimate


def edit_arguments(args: argparse.Namespace) -> dict:
    """The editing keywords of :meth:`VideoToAudio.generate` but ``keep_audio`` (each job's own
    video) from ``--regenerate``, ``--audio-prompt`` and ``--crossfade``, checked in one sentence
    each before anything is loaded (the stretches against each clip in :func:`check_edit_jobs`)."""
    check_edit_options(keep_audio=args.keep_audio, regenerate=bool(args.regenerate),
                       audio_prompt=bool(args.audio_prompt), crossfade=args.crossfade)
    stretches = check_stretches(parse_stretches(args.regenerate)) if args.regenerate else None
    prompt = Path(args.audio_prompt) if args.audio_prompt else None
    if prompt is not None and not prompt.is_file():
        raise GenerationError(f"the audio prompt {prompt} does not exist")
    return dict(regenerate=stretches, audio_prompt=prompt, crossfade=args.crossfade)


def check_edit_jobs(jobs: list[Job], keep_audio: bool, edit: dict) -> None:
    """Refuse, in one sentence, a job whose video has no audio track to keep, whose clip a
    stretch to regenerate leaves, or that is not longer than the audio prompt."""
    prompt = edit["audio_prompt"]
    prompt_seconds = None
    if prompt is not None:
        try:
            info = probe(prompt)
        except MediaError as exc:
            raise GenerationError(str(exc)) from None
        if not info.has_audio:
            raise GenerationError(f"the audio prompt {prompt} has no audio track")
        prompt_seconds = info.audio_duration or info.duration
    for job in jobs:
        if keep_audio:
            if not probe(job.video).has_audio:
                raise GenerationError(f"{job.video} has no audio track to keep; leave out "
                                      "--keep-audio, or give a video with sound")
            check_stretches(edit["regenerate"], job.plan.duration)
        if prompt_seconds is not None and prompt_seconds >= job.plan.duration:
            raise GenerationError(f"the audio prompt {prompt} lasts {prompt_seconds:.2f} s, not "
                                  f"less than the {job.plan.duration:.2f} s of {job.video}; give "
                                  "a shorter prompt")


def check_prompts(args: argparse.Namespace) -> None:
    """Refuse, in one sentence, an empty ``--prompt`` or ``--negative-prompt``."""
    for flag, value in (("--prompt", args.prompt), ("--negative-prompt", args.negative_prompt)):
        if value is not None and not value.strip():
            raise GenerationError(f"{flag} is empty; give the words describing the sound, or "
                                  "leave it out")


def text_only_source(args: argparse.Namespace) -> Source:
    """The one source of sound from text alone (no VIDEO given): ``--prompt`` for ``--duration``
    seconds, named after ``-o``. Refused in one sentence without a prompt or a duration, and with
    the options that need a video."""
    if args.prompt is None:
        raise GenerationError("no video was given; give a VIDEO, or --prompt with --duration and "
                              "-o FILE.wav to generate sound from text alone")
    if args.duration is None or args.duration <= 0:
        raise GenerationError("sound from text alone needs its length: give --duration SECONDS "
                              "(more than 0)")
    for flag, given in (("--start", args.start is not None), ("--keep-audio", args.keep_audio),
                        ("--regenerate", bool(args.regenerate)),
                        ("--audio-prompt", bool(args.audio_prompt)),
                        ("--split", bool(args.split)), ("--root", bool(args.root))):
        if given:
            raise GenerationError(f"{flag} needs a video, and none was given; leave it out to "
                                  "generate sound from text alone")
    return Source(None, 0.0, args.duration, Path(args.output).stem if args.output else "",
                  prompt=args.prompt, negative_prompt=args.negative_prompt)


def video_sources(args: argparse.Namespace, notes: list[str]) -> list[Source]:
    """The sources of the VIDEO arguments (:func:`expand_inputs`), with ``--start`` and
    ``--duration`` applied and the text prompts: ``--prompt`` for every source when given, else
    each manifest clip's caption; ``--negative-prompt`` for every source."""
    sources = expand_inputs([Path(a) for a in args.inputs if not is_override(a)], notes,
                            split=args.split, root=Path(args.root) if args.root else None)
    if len(sources) > 1 and args.start is not None:
        raise GenerationError("--start applies to one video; give the stretches of several "
                              "videos in a manifest (start and duration columns)")
    return [dataclasses.replace(
        source, start=args.start if args.start is not None else source.start,
        duration=args.duration if args.duration is not None else source.duration,
        prompt=args.prompt if args.prompt is not None else source.prompt,
        negative_prompt=args.negative_prompt) for source in sources]


def check_text_encoder(recipe: Recipe, jobs: list[Job], args: argparse.Namespace) -> None:
    """Without a ``text_encoder`` in the recipe, refuse ``--prompt``/``--negative-prompt`` in one
    sentence, and take the manifest's captions out of the jobs' sources (with a note)."""
    if recipe.has("text_encoder"):
        return
    for flag, value in (("--prompt", args.prompt), ("--negative-prompt", args.negative_prompt)):
        if value is not None:
            raise GenerationError(f"{recipe.source} has no text encoder, so it cannot follow "
                                  f"{flag}; leave it out, or give a recipe with a text_encoder")
    captioned = sum(job.source.prompt is not None for job in jobs)
    if captioned:
        note(f"{recipe.source} has no text encoder: the captions of {captioned} clip(s) are not "
             "used")
    for job in jobs:
        job.source = dataclasses.replace(job.source, prompt=None)


def run_generate(args: argparse.Namespace) -> int:
    """Run ``v2a generate`` with its parsed arguments; the exit code."""
    notes: list[str] = []
    if args.overwrite and args.skip_finished:
        raise GenerationError("--overwrite replaces finished outputs and --skip-finished keeps "
                              "them; give one of them")
    check_prompts(args)
    overrides = [a for a in args.inputs if is_override(a)] + list(args.overrides)
    text_only = not any(not is_override(a) for a in args.inputs)
    output = Path(args.output) if args.output else None
    steps = parse_steps(args.steps)
    edit = edit_arguments(args)
    stage = OutputStage(peak_dbfs=None if args.raw_audio else args.peak,
                        loudness_lufs=None if args.raw_audio else args.loudness)
    if text_only:
        jobs, kept = plan_text_job(text_only_source(args), output, args.audio_format,
                                   args.overwrite, skip_finished=args.skip_finished)
    else:
        sources = video_sources(args, notes)
        jobs, kept = plan_jobs(sources, output, output_audio_format(output, args.audio_format),
                               args.overwrite, skip_finished=args.skip_finished)
    if kept:
        notes.append(f"kept the finished outputs of {kept} of {len(jobs) + kept} videos "
                     "(--skip-finished)")
    for text in notes:
        note(text)
    if not jobs:
        return 0
    check_edit_jobs(jobs, args.keep_audio, edit)

    recipe = load_recipe(args.recipe, overrides, **recipe_options(args))
    require_runnable(recipe)
    check_text_encoder(recipe, jobs, args)
    sample_rate, channels = codec_format(recipe)
    needed: dict[Path, int] = {}
    for job in jobs:
        folder = job.anchor.parent
        needed[folder] = needed.get(folder, 0) + estimated_bytes(job, sample_rate, channels)
    check_writable({path.parent for job in jobs for path in job.outputs}, needed)
    for job in jobs:
        if job.plan is not None and job.plan.message:
            note(job.plan.message)
    with Outputs(jobs, overwrite=args.overwrite):
        model = VideoToAudio.from_recipe(recipe, args.checkpoint, device=args.device or "cpu")
        shortfall = check_resources(estimate(recipe, task="generate", built=model.components),
                                    folder=jobs[0].anchor.parent)
        if shortfall:  # the weights are in memory; what generating adds may not fit
            warn(shortfall)
        for job in tqdm(jobs, desc="generating", unit="video", disable=len(jobs) < 2):
            try:
                audio, sr = model.generate(job.video, prompt=job.source.prompt,
                                           negative_prompt=job.source.negative_prompt,
                                           start=job.source.start,
                                           duration=job.source.duration, seed=args.seed,
                                           candidates=args.candidates, steps=steps, cfg=args.cfg,
                                           temperature=args.temperature, precision=args.precision,
                                           progress=len(jobs) == 1,
                                           keep_audio=job.video if args.keep_audio else None,
                                           **edit)
            except MediaError as exc:
                raise GenerationError(str(exc)) from None
            audio, report = apply_output_stage(audio, sr, stage)
            what = job.video or job.wav
            if report.warning():
                warn(f"{what}: {report.warning()}")
            for text in report.notes:
                note(f"{what}: {text}")
            write_outputs(job, audio, sr)
            tqdm.write(f"wrote {' and '.join(str(p) for p in reversed(job.outputs))}",
                       file=sys.stdout)
    return 0
