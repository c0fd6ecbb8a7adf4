"""The jobs of a ``v2a generate`` batch, planned and checked before any model is loaded: each
source's output names (:func:`output_paths`), what muxing will do (:func:`plan_jobs`; the one
audio file of sound from text alone, :func:`plan_text_job`), whether
outputs exist (:func:`existing_outputs`) and whether their folders can take them
(:func:`check_writable`, :func:`estimated_bytes`)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from v2a.files import journal_path
from v2a.generate.errors import GenerationError
from v2a.generate.inputs import Source
from v2a.media import (
    AUDIO_SUFFIXES,
    VIDEO_SUFFIXES,
    MediaError,
    MuxPlan,
    generated_by_v2a,
    plan_mux,
)
from v2a.recipe import Recipe
from v2a.registry import default_registry

#: What ``-o FILE`` may end in: the mp4, or the audio written beside it.
OUTPUT_SUFFIXES = (".mp4", ".wav", ".flac")
#: The audio files v2a generate writes (the only output of sound from text alone).
AUDIO_WRITTEN = (".wav", ".flac")


def names_a_file(output: Path) -> bool:
    """Whether ``-o output`` names one video's output files rather than a folder: it ends in a
    media suffix (``out.mp4``, ``out.wav``) and is not an existing folder."""
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


@dataclass
class Job:
    """One source's outputs, planned before any model is loaded: the audio file and, for a
    video, the mp4 (None for sound from text alone, :func:`plan_text_job`)."""

    source: Source
    wav: Path
    mp4: Path | None
    plan: MuxPlan | None = None  # what muxing will do, decided by :func:`plan_jobs`
    replaces: bool = False  # outputs exist and --overwrite replaces them

    @property
    def video(self) -> Path | None:
        return self.source.video

    @property
    def outputs(self) -> list[Path]:
        """The files the job writes: the audio file, then the mp4 when there is one."""
        return [self.wav] + ([self.mp4] if self.mp4 is not None else [])

    @property
    def anchor(self) -> Path:
        """The output the job's lock and commit journal are named after: the mp4, or the audio
        file when there is no mp4."""
        return self.mp4 if self.mp4 is not None else self.wav


def _existing_folder(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(folders: set[Path], needed: dict[Path, int]) -> None:
    """Refuse, in one sentence, output folders that cannot be created or written, or whose file
    system has less free space than the outputs planned there need (``needed``: bytes by folder)."""
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
    twice that when re-encoded) and AAC at 192 kbit/s; a job without video, its audio alone."""
    if job.plan is None:
        return int(job.source.duration * sample_rate * channels * 2) + 65_536
    seconds = job.plan.duration
    video_bytes = job.video.stat().st_size * (1 if job.plan.copy_video else 2)
    return int(seconds * sample_rate * channels * 2 + video_bytes + seconds * 24_000) + 65_536


def codec_format(recipe: Recipe) -> tuple[int, int]:
    """The codec's sample rate and channels as its plug-in declares them from the recipe, without
    building it (48 kHz stereo, the most a codec here writes, when it does not declare them)."""
    choice = recipe.choice("codec")
    declared = default_registry().properties(choice.kind, choice.plugin, choice.config)
    return int(declared.get("sample_rate") or 48_000), int(declared.get("channels") or 2)


def plan_jobs(sources: list[Source], output: Path | None, audio_format: str,
              overwrite: bool, *, skip_finished: bool = False) -> tuple[list[Job], int]:
    """The outputs of every source, checked before anything heavy runs: readable inputs with a
    video stream, no output that overwrites an input or another output, existing outputs only with
    ``overwrite``, and how each video stream will be muxed (copied or re-encoded). With
    ``skip_finished``, a source whose outputs a finished v2a run wrote (:func:`finished`) is left
    out. Returns the jobs and how many sources were left out so."""
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
    planned = len(jobs)
    if skip_finished:
        jobs = [job for job in jobs if not finished(job)]
    for job in jobs:  # every input readable, and its muxing known, before anything is written
        try:  # plan_mux probes the input: no video stream, a still picture, damage: one sentence
            job.plan = plan_mux(job.video, job.mp4, start=job.source.start,
                                duration=job.source.duration)
        except MediaError as exc:
            raise GenerationError(str(exc)) from None
        job.replaces = existing_outputs(job, overwrite)
    return jobs, planned - len(jobs)


def plan_text_job(source: Source, output: Path | None, audio_format: str | None,
                  overwrite: bool, *, skip_finished: bool = False) -> tuple[list[Job], int]:
    """The job of sound from text alone (``source.video`` None): one audio file, ``-o output``,
    which must name a .wav or .flac file (``audio_format``, from ``--audio-format``, must agree
    with it). Existing outputs are refused without ``overwrite``, or kept with
    ``skip_finished`` when a finished v2a run wrote them, as :func:`plan_jobs` does. Returns
    ``([job], 0)``, or ``([], 1)`` when the output is kept."""
    if output is None or output.suffix.lower() not in AUDIO_WRITTEN or output.is_dir():
        raise GenerationError(f"without a video, v2a generate writes only the sound: give -o "
                              f"a .wav or .flac file name, not {output or 'nothing'}")
    own = output.suffix.lower()[1:]
    if audio_format not in (None, own):
        raise GenerationError(f"-o {output} asks for {own} audio but --audio-format asks for "
                              f"{audio_format}; give one of them")
    job = Job(source=source, wav=output, mp4=None)
    if skip_finished and finished(job):
        return [], 1
    job.replaces = existing_outputs(job, overwrite)
    return [job], 0


def finished(job: Job) -> bool:
    """Whether ``job``'s outputs exist, all written by v2a, with no unfinished commit: what
    a run that finished this source leaves (a killed run leaves at most one of the pair, or its
    commit journal)."""
    return (not journal_path(job.anchor).exists()
            and all(p.is_file() and generated_by_v2a(p) for p in job.outputs))


def existing_outputs(job: Job, overwrite: bool) -> bool:
    """Whether ``job``'s outputs exist (and ``overwrite`` lets them be replaced). One of the pair
    alone, written by v2a, is a half pair from an older or interrupted run: it is done again. An
    existing output without ``overwrite`` is refused."""
    present = [p for p in job.outputs if p.exists()]
    if not present:
        return False
    if journal_path(job.anchor).exists():
        return True  # a dead run's commit: finished under the lock (Outputs), then checked again
    if len(present) < len(job.outputs) and generated_by_v2a(present[0]):
        return True
    if not overwrite:
        raise GenerationError(f"{present[0]} exists; pass --overwrite to replace it, or "
                              "--skip-finished to keep what a finished run wrote")
    return True
