"""Converters: manifests written from public dataset layouts.

:func:`vggsound_manifest` (VGGSound's CSV and a folder of downloaded videos),
:func:`folder_manifest` (every video below a folder) and :func:`music_manifest` (the MUSIC
dataset's JSON files), and ``v2a manifest vggsound|folder|music`` on the command line; each
returns a :class:`Conversion`, the clips and the files it left out with the reason, for
:func:`v2a.manifests.write_manifest`. Each clip's caption is its label put in words (the
datasets have no captions of their own): VGGSound's class label as it is, a folder's label
with underscores as spaces, ``playing the <instrument>`` for MUSIC (see :func:`music_caption`);
``captions=False`` leaves them out.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2a.errors import suggestion
from v2a.files import is_temporary
from v2a.manifests import Clip, ManifestError
from v2a.media import VIDEO_SUFFIXES, MediaError, find_video, media_files, probe


@dataclass
class Conversion:
    """What a converter made: the clips, and the files it left out with the reason."""

    clips: list[Clip]
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (file or id, reason)

    def report(self, output: Path | None = None, limit: int = 10) -> str:
        lines = [f"{len(self.clips)} clips" + (f" written to {output}" if output else "")]
        if self.left_out:
            lines.append(f"{len(self.left_out)} left out:")
            lines += [f"  {what}: {why}" for what, why in self.left_out[:limit]]
            if len(self.left_out) > limit:
                lines.append(f"  ... and {len(self.left_out) - limit} more")
        return "\n".join(lines)


VGGSOUND_PATTERN = "{id}_{start:06d}.mp4"
MUSIC_PATTERN = "{label}/{id}.mp4"


def _format(pattern: str, values: dict[str, Any], where: str) -> str:
    try:
        return pattern.format(**values)
    except KeyError as exc:
        raise ManifestError(
            f"the file-name pattern {pattern!r} uses {{{exc.args[0]}}}, which {where} does not "
            f"have; {suggestion(str(exc.args[0]), values, 'fields')}"
        ) from None
    except (ValueError, IndexError) as exc:
        raise ManifestError(f"the file-name pattern {pattern!r} does not apply: {exc}") from None


def hashed_split(key: str, val_fraction: float, test_fraction: float) -> str:
    """A split fixed by ``key`` (a video's name): the same video always lands in the same split,
    whatever else the dataset holds."""
    u = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    within = 0 <= val_fraction <= 1 and 0 <= test_fraction <= 1
    if not (within and val_fraction + test_fraction <= 1):
        raise ManifestError(
            f"the val and test fractions must lie in [0, 1] with a sum of at most 1, got "
            f"{val_fraction} and {test_fraction}"
        )


def windows(duration: float, window: float, hop: float | None) -> list[float]:
    """Starts of the windows of ``window`` s every ``hop`` s (default: ``window``) that fit in
    ``duration`` s."""
    hop = hop or window
    if duration + 1e-6 < window:
        return []
    count = math.floor((duration - window) / hop + 1e-6) + 1
    return [round(i * hop, 3) for i in range(count)]


def label_caption(label: str | None) -> str | None:
    """A label as a caption: underscores read as spaces (``dog_barking`` → ``dog barking``)."""
    return None if label is None else " ".join(label.replace("_", " ").split()) or None


def music_caption(label: str) -> str | None:
    """A MUSIC label as a caption: ``acoustic_guitar`` → ``playing the acoustic guitar``, a
    duet's ``flute violin`` → ``playing the flute and the violin`` (None for an empty label)."""
    instruments = [name.replace("_", " ") for name in label.split()]
    return "playing " + " and ".join(f"the {name}" for name in instruments) if instruments else None


def _cut(path: str, file: Path, window: float | None, hop: float | None, label: str | None,
         split: str | None, left_out: list[tuple[str, str]], caption: str | None = None
         ) -> list[Clip]:
    """One clip per file (``window`` None), or one per window that fits (probing the file)."""
    if window is None:
        return [Clip(path=path, label=label, split=split, caption=caption)]
    try:
        duration = probe(file).duration
    except MediaError as exc:
        left_out.append((path, str(exc)))
        return []
    if duration is None:
        left_out.append((path, "its duration is unknown, so it cannot be cut into windows"))
        return []
    starts = windows(duration, window, hop)
    if not starts:
        left_out.append(
            (path, f"it lasts {duration:.2f} s, shorter than the window of {window:g} s"))
    return [Clip(path=path, start=s, duration=window, label=label, split=split, caption=caption)
            for s in starts]


def vggsound_manifest(
    csv_file: str | Path,
    *,
    videos: str | Path,
    pattern: str = VGGSOUND_PATTERN,
    whole_videos: bool = False,
    seconds: float = 10.0,
    check_files: bool = True,
    val_fraction: float = 0.0,
    captions: bool = True,
) -> Conversion:
    """Clips from VGGSound's ``vggsound.csv`` (rows ``youtube_id,start_seconds,label,split``,
    no header) and a folder of downloaded videos.

    ``pattern`` names each row's file in ``videos``; it may use ``{id}`` (the YouTube id),
    ``{start}`` and ``{end}`` (seconds, integers when whole), ``{start_ms}``/``{end_ms}``,
    ``{label}`` and ``{split}``. The default ``{id}_{start:06d}.mp4`` is the layout of the
    common download scripts (``---g-f_I2yQ_000001.mp4``): files already cut to the 10 s
    clip, so each clip starts at 0. With ``whole_videos`` the files are the full YouTube videos
    (e.g. ``pattern="{id}.mp4"``) and each clip starts at the CSV's start second. A file missing
    with the pattern's suffix is also looked for with the other video suffixes (a download as
    ``.mkv`` or ``.webm``). With ``check_files`` (default) rows whose file is missing are left
    out and listed; without, every row is kept. VGGSound has train and test splits only:
    ``val_fraction`` moves that share of the train clips to ``val``, by a hash of the YouTube id
    (every clip of a video lands in the same split, the same on every run). With ``captions``
    each clip's caption is its class label.
    """
    _check_fractions(val_fraction, 0.0)
    csv_file, videos = Path(csv_file), Path(videos)
    if not csv_file.is_file():
        raise ManifestError(f"the VGGSound CSV {csv_file} does not exist")
    clips: list[Clip] = []
    left_out: list[tuple[str, str]] = []
    seen: set[str] = set()
    reader = csv.reader(io.StringIO(csv_file.read_text(encoding="utf-8")))
    for row in reader:
        line = reader.line_num
        if not row or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 4:
            raise ManifestError(
                f"{csv_file}, line {line}: VGGSound rows have 4 fields (youtube id, start seconds, "
                f"label, split), this one has {len(row)}"
            )
        video_id, start_text, label, split = (v.strip() for v in row[:4])
        if val_fraction and split == "train":
            split = hashed_split(video_id, val_fraction, 0.0)
        try:
            start = float(start_text)
        except ValueError:
            if line == 1:  # a header row someone added
                continue
            raise ManifestError(
                f"{csv_file}, line {line}: start {start_text!r} is not a number"
            ) from None
        whole = lambda x: int(x) if float(x).is_integer() else x  # noqa: E731
        values = {"id": video_id, "start": whole(start), "end": whole(start + seconds),
                  "start_ms": round(start * 1000), "end_ms": round((start + seconds) * 1000),
                  "label": label, "split": split}
        name = _format(pattern, values, "a VGGSound row")
        clip_start = start if whole_videos else 0.0
        if check_files:
            file = find_video(videos, name)
            if file is None:
                left_out.append((name, f"missing from {videos}"))
                continue
            name = file.relative_to(videos).as_posix()
        clip = Clip(path=name, start=clip_start, duration=seconds, label=label or None,
                    split=split or None, caption=(label or None) if captions else None)
        if clip.id in seen:
            left_out.append((clip.id, "listed twice in the CSV"))
            continue
        seen.add(clip.id)
        clips.append(clip)
    return Conversion(clips, left_out)


def folder_manifest(
    folder: str | Path,
    *,
    window: float | None = None,
    hop: float | None = None,
    labels_from_folders: bool = False,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    captions: bool = True,
) -> Conversion:
    """Clips from every video below ``folder`` (sorted by path; paths relative to it).

    Without ``window`` each file is one clip from 0 (extraction and training cut their window
    from its start). With ``window`` (seconds) each file is probed and cut into the windows
    that fit, every ``hop`` seconds (default: back to back); files that cannot be probed or are
    shorter than the window are left out and listed. ``labels_from_folders``: a file's label is
    its parent folder's path (``dog/a.mp4`` → ``dog``), and with ``captions`` its caption too
    (:func:`label_caption`: ``dog_barking`` → ``dog barking``). Splits: with ``val_fraction`` or
    ``test_fraction``, each file goes to ``val``/``test``/``train`` by a hash of its path (all
    windows of a file in one split, stable as files are added).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder} is not a folder")
    _check_fractions(val_fraction, test_fraction)
    splitting = bool(val_fraction or test_fraction)
    clips: list[Clip] = []
    left_out: list[tuple[str, str]] = []
    for file in media_files([folder], VIDEO_SUFFIXES):
        if is_temporary(file):  # a video v2a is writing there (or a killed run left)
            continue
        rel = file.relative_to(folder).as_posix()
        parent = Path(rel).parent.as_posix()
        label = parent if labels_from_folders and parent != "." else None
        split = hashed_split(rel, val_fraction, test_fraction) if splitting else None
        caption = label_caption(label) if captions else None
        clips += _cut(rel, file, window, hop, label, split, left_out, caption)
    return Conversion(clips, left_out)


def music_manifest(
    json_files: Sequence[str | Path],
    *,
    videos: str | Path,
    pattern: str = MUSIC_PATTERN,
    window: float | None = None,
    hop: float | None = None,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    check_files: bool = True,
    captions: bool = True,
) -> Conversion:
    """Clips from the MUSIC dataset's JSON files (Zhao et al., "The Sound of Pixels"; the files
    ``MUSIC_solo_videos.json``, ``MUSIC21_solo_videos.json`` and ``MUSIC_duet_videos.json`` of
    https://github.com/roudimit/MUSIC_dataset) and a folder of downloaded videos.

    Each JSON file is ``{"videos": {label: [youtube ids]}}``; the label is the instrument
    (``acoustic_guitar``) or, for duets, the two instruments separated by a space
    (``flute violin``). ``pattern`` names a video's file in ``videos`` from ``{id}`` and
    ``{label}``; the default ``{label}/{id}.mp4`` is one folder per instrument (use
    ``{id}.mp4`` for a flat folder). MUSIC videos are whole performances of a minute or more:
    with ``window`` each is probed and cut into windows (as :func:`folder_manifest`),
    otherwise each video is one clip from 0. MUSIC has no official split; ``val_fraction`` and
    ``test_fraction`` split by a hash of the YouTube id, so that every window of a video lands
    in one split. Missing files are left out and listed (unless ``check_files`` is false).
    With ``captions`` each clip's caption names its instruments (:func:`music_caption`).
    """
    videos = Path(videos)
    _check_fractions(val_fraction, test_fraction)
    splitting = bool(val_fraction or test_fraction)
    clips: list[Clip] = []
    left_out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for json_file in map(Path, json_files):
        try:
            data = json.loads(json_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"the MUSIC file {json_file} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{json_file} is not a readable JSON file ({exc})") from None
        groups = data.get("videos") if isinstance(data, dict) else None
        if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
            raise ManifestError(
                f"{json_file} is not a MUSIC video list: it needs "
                '{"videos": {label: [youtube ids]}}'
            )
        for label, ids in groups.items():
            for video_id in ids:
                name = _format(pattern, {"id": video_id, "label": label}, "a MUSIC entry")
                file = videos / name
                if check_files:
                    found = find_video(videos, name)
                    if found is None:
                        left_out.append((name, f"missing from {videos}"))
                        continue
                    file, name = found, found.relative_to(videos).as_posix()
                if name in seen:
                    left_out.append((name, f"listed twice (again in {json_file.name})"))
                    continue
                seen.add(name)
                split = None
                if splitting:
                    split = hashed_split(str(video_id), val_fraction, test_fraction)
                caption = music_caption(label) if captions else None
                clips += _cut(name, file, window, hop, label, split, left_out, caption)
    return Conversion(clips, left_out)

