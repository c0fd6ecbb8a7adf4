"""Finding media files: the suffixes v2a takes as audio and video, the files named or inside
folders named (:func:`media_files`), and the one lookup of a video by name (:func:`find_video`).
v2a's own temporaries are never found."""

from __future__ import annotations

from pathlib import Path

from v2a.files import is_temporary
from v2a.media.probing import MediaError

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")

def find_video(folder: Path, name: str) -> Path | None:
    """The video ``name`` in ``folder``: ``folder / name`` itself, or a file of the same stem
    with one of :data:`VIDEO_SUFFIXES` in either case (``a.mkv`` or ``A.MP4`` where ``a.mp4``
    was named: what a downloader produced; ``name`` may also be a bare stem), or None. A
    temporary v2a is writing is never one (:func:`v2a.files.is_temporary`). Only the candidate
    names are looked up, never a listing of the folder, so a 200k-file folder stays fast."""
    named = folder / name
    stem = named.stem if named.suffix.lower() in VIDEO_SUFFIXES else named.name
    candidates = [named] + [named.with_name(stem + s) for s in VIDEO_SUFFIXES]
    candidates += [named.with_name(stem + s.upper()) for s in VIDEO_SUFFIXES]
    return next((p for p in candidates if p.is_file() and not is_temporary(p)), None)


def media_files(paths: list[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Files named, and files with one of ``suffixes`` inside folders named, sorted; v2a's own
    temporaries (:func:`v2a.files.is_temporary`) inside folders are never listed."""

    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file()
                            and not is_temporary(f))
        elif p.exists():
            found.append(p)
        else:
            raise MediaError(f"{p} does not exist")
    return found
