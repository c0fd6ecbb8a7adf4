"""What ``v2a generate`` is given: videos, folders of videos and clip manifests, expanded into
:class:`Source` items (never v2a's own outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from v2a.files import is_temporary
from v2a.generate.errors import GenerationError
from v2a.manifests import Clip, default_id, read_manifest
from v2a.media import VIDEO_SUFFIXES, generated_by_v2a, media_files


@dataclass(frozen=True)
class Source:
    """One thing to generate: a video file (None: sound from text alone), the stretch of it
    (``start``, ``duration`` s; None: to the end), the stem its outputs are named after, and the
    text ``prompt`` and ``negative_prompt`` it is generated with (None: none)."""

    video: Path | None
    start: float = 0.0
    duration: float | None = None
    name: str = ""
    prompt: str | None = None
    negative_prompt: str | None = None

    @property
    def stem(self) -> str:
        return self.name or self.video.stem


def _clip_stem(clip: Clip, video: Path) -> str:
    """Output stem of a manifest row: the video's stem, with ``@start`` when the row does not start
    at 0, or the row's own ``id`` (slashes made underscores) when the manifest gives one."""
    if clip.id != default_id(clip.path, clip.start):
        return clip.id.replace("/", "_").replace("\\", "_")
    return video.stem + (f"@{clip.start:g}" if clip.start else "")


def is_v2a_output(path: Path) -> bool:
    """Whether ``path`` is a file v2a wrote: a temporary, an output named ``<stem>.v2a.<ext>``, or a
    file whose metadata says v2a generated it (:data:`v2a.media.GENERATED_BY`)."""
    return is_temporary(path) or path.stem.endswith(".v2a") or generated_by_v2a(path)


def expand_inputs(paths: list[Path], notes: list[str] | None = None, *,
                  split: str | None = None, root: Path | None = None) -> list[Source]:
    """Videos named, videos inside folders named (never v2a's own outputs or temporaries, which
    are left out with a sentence appended to ``notes``, for the caller to show once the inputs
    are checked), and the clips CSV/JSONL manifests list (their ``start`` and ``duration``
    honoured, their ``caption`` the source's ``prompt``; only those of ``split`` when given; relative paths below ``root``, default the
    manifest's folder). A ``split`` that leaves a manifest without clips is a
    :class:`GenerationError`."""
    sources: list[Source] = []
    for path in paths:
        if path.suffix.lower() in (".csv", ".jsonl") and path.is_file():
            clips = read_manifest(path, split=split)
            if not clips:
                raise GenerationError(f"the manifest {path} has no clip in the split {split!r}"
                                      if split else f"the manifest {path} lists no clip")
            for clip in clips:
                video = clip.resolve(root if root is not None else path.parent)
                sources.append(Source(video, clip.start, clip.duration, _clip_stem(clip, video),
                                      prompt=clip.caption or None))
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
