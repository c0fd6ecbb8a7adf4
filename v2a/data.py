"""Datasets: manifests of clips, converters from public dataset layouts, and what the trainer reads.

Manifests
---------
A manifest lists clips, one per row, as CSV (with a header) or JSON Lines (``.jsonl``)::

    path,start,duration,label,split
    dog/barking_01.mp4,0,10,dog barking,train
    long_video.mp4,30,10,,val

* ``path`` (required): the video, relative to the recipe's ``data.root`` (or, when that is
  unset, to the manifest's own folder), or absolute.
* ``start`` (seconds, default 0) and ``duration`` (seconds, empty = to the end of the file): the
  part of the file the clip may use. Training and extraction cut a window of
  ``data.clip_seconds`` from ``start``; a clip whose ``duration`` is shorter than that window
  is skipped and reported.
* ``label`` and ``split`` (``train``, ``val``, ``test``, ...), optional. A clip without a split
  belongs to ``train``.
* ``id`` (optional): a unique name for the clip; by default its path, with ``@start`` appended
  when the clip does not start at 0 (``long_video.mp4@30``).

Converters (:func:`vggsound_manifest`, :func:`folder_manifest`, :func:`music_manifest`, and
``v2a manifest vggsound|folder|music`` on the command line) write manifests for VGGSound's CSV,
a folder of videos, and the MUSIC dataset's JSON files.

What the trainer reads
----------------------
:class:`CachedClips` (features from the cache ``v2a extract`` writes; no video decoding) and
:class:`LiveClips` (decoded and encoded on the fly) are map-style datasets of
:class:`ClipItem`; :func:`collate` pads a list of them into a :class:`Batch`. A clip that
:class:`LiveClips` cannot use comes back as a :class:`Skipped` item, which :func:`collate`
leaves out of the batch and lists in ``Batch.skipped``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from v2a.errors import UserError, suggestion
from v2a.files import is_temporary, write_text_atomic
from v2a.media import find_video
from v2a.sequences import FeatureSequence, pad_sequences

if TYPE_CHECKING:
    from v2a.recipe import Recipe

MANIFEST_COLUMNS = ("path", "start", "duration", "label", "split", "id")
DEFAULT_SPLIT = "train"


class ManifestError(UserError):
    """A manifest (or a dataset's own index file) that cannot be read, with the reason."""


# ---------------------------------------------------------------------------------------------
# Clips and manifests
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One clip of a dataset: a video file and the part of it that may be used.

    ``path`` is as written in the manifest (relative to the data root, or absolute); ``start``
    and ``duration`` are seconds (``duration`` None: to the end of the file); ``id`` is unique
    in a manifest (default: ``path``, or ``path@start`` when ``start`` is not 0).
    """

    path: str
    start: float = 0.0
    duration: float | None = None
    label: str | None = None
    split: str | None = None
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", default_id(self.path, self.start))

    def resolve(self, root: str | Path | None) -> Path:
        """The file: ``path`` itself when absolute (or no root is given), else below ``root``."""
        path = Path(self.path).expanduser()
        return path if path.is_absolute() or root is None else Path(root) / path

    def in_split(self, split: str | None) -> bool:
        """Whether the clip belongs to ``split`` (None: every split; no split means train)."""
        return split is None or (self.split or DEFAULT_SPLIT) == split

    def as_row(self) -> dict[str, Any]:
        """The clip as a manifest row (``id`` only when it is not the default)."""
        duration = None if self.duration is None else _number(self.duration)
        row: dict[str, Any] = {"path": self.path, "start": _number(self.start),
                               "duration": duration, "label": self.label, "split": self.split}
        if self.id != default_id(self.path, self.start):
            row["id"] = self.id
        return row


def default_id(path: str, start: float) -> str:
    return path if start == 0 else f"{path}@{_number(start)}"


def _number(x: float) -> int | float:
    """``3.0`` → ``3``; other floats rounded to the millisecond, for stable manifests."""
    x = round(float(x), 3)
    return int(x) if x.is_integer() else x


def read_manifest(path: str | Path, split: str | None = None) -> list[Clip]:
    """The clips of a CSV or JSONL manifest (those of ``split`` when given), in file order.

    Every row is checked: an unknown column, a missing path, a start or duration that is not a
    number (negative, or zero for a duration), or an id used twice raise a
    :class:`ManifestError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"the manifest {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read the manifest {path}: {exc}") from None
    rows = _jsonl_rows(text, path) if path.suffix.lower() == ".jsonl" else _csv_rows(text, path)
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        clip = _clip_from_row(row, path, line)
        if clip.id in seen:
            raise ManifestError(
                f"{path}, line {line}: the clip {clip.id!r} is listed twice (also line "
                f"{seen[clip.id]}); give one of them another start or an id column"
            )
        seen[clip.id] = line
        clips.append(clip)
    return [c for c in clips if c.in_split(split)]


def _csv_rows(text: str, path: Path) -> Iterable[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    for row in reader:
        line = reader.line_num
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [h.strip().lower() for h in row]
            _check_columns(header, path, line)
            continue
        if len(row) > len(header):
            raise ManifestError(
                f"{path}, line {line}: {len(row)} fields for {len(header)} columns "
                "(quote values that contain commas)"
            )
        yield line, dict(zip(header, (v.strip() for v in row)))
    if header is None:
        raise ManifestError(
            f"the manifest {path} is empty; it needs a header row (path,start,duration,...)"
        )


def _jsonl_rows(text: str, path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}, line {line}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{path}, line {line}: each line must be a JSON object")
        _check_columns(list(row), path, line)
        yield line, row


def _check_columns(columns: list[str], path: Path, line: int) -> None:
    for column in columns:
        if column not in MANIFEST_COLUMNS:
            raise ManifestError(
                f"{path}, line {line}: unknown column {column!r}; "
                f"{suggestion(column, MANIFEST_COLUMNS, 'columns')}"
            )
    if "path" not in columns:
        raise ManifestError(f"{path}, line {line}: the manifest needs a 'path' column")


def _clip_from_row(row: dict[str, Any], path: Path, line: int) -> Clip:
    def text(key: str) -> str | None:
        value = row.get(key)
        if value is None:
            return None
        value = str(value).strip()
        return value or None

    def number(key: str, default: float | None, positive: bool) -> float | None:
        value = row.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return default
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ManifestError(
                f"{path}, line {line}: {key} {value!r} is not a number of seconds"
            ) from None
        if not math.isfinite(x) or x < 0 or (positive and x == 0):
            need = "positive" if positive else "zero or more"
            raise ManifestError(f"{path}, line {line}: {key} must be {need} seconds, got {value!r}")
        return x

    clip_path = text("path")
    if clip_path is None:
        raise ManifestError(f"{path}, line {line}: the path is empty")
    return Clip(
        path=clip_path, start=number("start", 0.0, False) or 0.0,
        duration=number("duration", None, True), label=text("label"), split=text("split"),
        id=text("id") or "",
    )


def write_manifest(clips: Iterable[Clip], path: str | Path) -> Path:
    """Write clips as CSV, or JSONL when ``path`` ends in ``.jsonl``; atomically."""
    path = Path(path)
    clips = list(clips)
    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps({k: v for k, v in c.as_row().items() if v is not None}) + "\n"
                       for c in clips)
    else:
        columns = ["path", "start", "duration", "label", "split"]
        if any("id" in c.as_row() for c in clips):
            columns.append("id")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for clip in clips:
            writer.writerow({k: "" if v is None else v for k, v in clip.as_row().items()})
        text = buffer.getvalue()
    write_text_atomic(path, text)
    return path


def data_root(recipe: Recipe, manifest: str | Path) -> Path:
    """Where a manifest's relative paths point: ``data.root``, else the manifest's folder."""
    return Path(recipe.data.root).expanduser() if recipe.data.root else Path(manifest).parent


def manifest_of(recipe: Recipe) -> Path:
    """The recipe's ``data.manifest``, or a :class:`ManifestError` saying how to set it."""
    if not recipe.data.manifest:
        raise ManifestError(
            f"{recipe.source} names no manifest; set data.manifest=<file.csv> (write one with "
            "`v2a manifest folder|vggsound|music`)"
        )
    return Path(recipe.data.manifest).expanduser()


def cache_dir_of(recipe: Recipe) -> Path:
    """The recipe's feature cache: ``data.cache``, else ``<manifest>.cache`` beside the manifest."""
    if recipe.data.cache:
        return Path(recipe.data.cache).expanduser()
    manifest = manifest_of(recipe)
    return manifest.with_name(manifest.name + ".cache")


# ---------------------------------------------------------------------------------------------
# Converters
# ---------------------------------------------------------------------------------------------


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


def _cut(path: str, file: Path, window: float | None, hop: float | None, label: str | None,
         split: str | None, left_out: list[tuple[str, str]]) -> list[Clip]:
    """One clip per file (``window`` None), or one per window that fits (probing the file)."""
    if window is None:
        return [Clip(path=path, label=label, split=split)]
    from v2a.media import MediaError, probe

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
    return [Clip(path=path, start=s, duration=window, label=label, split=split) for s in starts]


def vggsound_manifest(
    csv_file: str | Path,
    *,
    videos: str | Path,
    pattern: str = VGGSOUND_PATTERN,
    whole_videos: bool = False,
    seconds: float = 10.0,
    check_files: bool = True,
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
    out and listed; without, every row is kept.
    """
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
                    split=split or None)
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
) -> Conversion:
    """Clips from every video below ``folder`` (sorted by path; paths relative to it).

    Without ``window`` each file is one clip from 0 (extraction and training cut their window
    from its start). With ``window`` (seconds) each file is probed and cut into the windows
    that fit, every ``hop`` seconds (default: back to back); files that cannot be probed or are
    shorter than the window are left out and listed. ``labels_from_folders``: a file's label is
    its parent folder's path (``dog/a.mp4`` → ``dog``). Splits: with ``val_fraction`` or
    ``test_fraction``, each file goes to ``val``/``test``/``train`` by a hash of its path (all
    windows of a file in one split, stable as files are added).
    """
    from v2a.media import VIDEO_SUFFIXES, media_files

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
        clips += _cut(rel, file, window, hop, label, split, left_out)
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
                clips += _cut(name, file, window, hop, label, split, left_out)
    return Conversion(clips, left_out)


# ---------------------------------------------------------------------------------------------
# Items and batches
# ---------------------------------------------------------------------------------------------


@dataclass
class ClipItem:
    """The training data of one clip (a window of ``data.clip_seconds`` from ``clip.start``).

    ``codes``: ``[k, l]`` int64 at ``frame_rate`` (None when the recipe has no codec);
    ``streams``: one :class:`~v2a.sequences.FeatureSequence` ``[1, t, d]`` per visual encoder,
    by stream name, times relative to the window's start; ``audio_features``: ``[1, t, d]`` of
    the recipe's audio encoder (None without one).
    """

    clip: Clip
    codes: Tensor | None
    streams: dict[str, FeatureSequence]
    audio_features: FeatureSequence | None
    frame_rate: float | None

    @property
    def id(self) -> str:
        return self.clip.id


@dataclass
class Skipped:
    """A clip that could not be used, and why (one sentence naming the file)."""

    clip: Clip
    reason: str


@dataclass
class Batch:
    """Clips padded to one length.

    ``codes``: ``[b, k, l]`` int64 (0 where padded) and ``valid``: ``[b, l]`` bool (True = a real
    frame), or None when the recipe has no codec; ``streams``: by name, ``[b, t, d]`` float32
    with a padding ``mask``; ``audio_features``: ``[b, t, d]`` with a mask, or None;
    ``frame_rate``: the codec's frames per second; ``skipped``: the items of the input that were
    :class:`Skipped` (not in the batch). ``len(batch)`` is ``b``, which can be 0 when every
    item was skipped.
    """

    ids: list[str]
    clips: list[Clip]
    codes: Tensor | None
    valid: Tensor | None
    streams: dict[str, FeatureSequence]
    audio_features: FeatureSequence | None
    frame_rate: float | None
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def _map(self, tensor, sequence) -> Batch:
        return dataclasses.replace(
            self,
            codes=None if self.codes is None else tensor(self.codes),
            valid=None if self.valid is None else tensor(self.valid),
            streams={k: sequence(v) for k, v in self.streams.items()},
            audio_features=None if self.audio_features is None else sequence(self.audio_features),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return self._map(move, lambda s: s.replace(
            values=move(s.values), mask=None if s.mask is None else move(s.mask)))

    def pin_memory(self) -> Batch:
        """Called by a DataLoader with ``pin_memory=True``."""
        pin = lambda t: t.pin_memory()  # noqa: E731
        return self._map(pin, lambda s: s.replace(
            values=pin(s.values), mask=None if s.mask is None else pin(s.mask)))


def collate(items: Sequence[ClipItem | Skipped]) -> Batch:
    """Pad :class:`ClipItem`\\ s into a :class:`Batch`; :class:`Skipped` ones go to ``skipped``."""
    skipped = [i for i in items if isinstance(i, Skipped)]
    good = [i for i in items if not isinstance(i, Skipped)]
    if not good:
        return Batch(ids=[], clips=[], codes=None, valid=None, streams={}, audio_features=None,
                     frame_rate=None, skipped=skipped)
    codes = valid = None
    if good[0].codes is not None:
        k = good[0].codes.shape[0]
        length = max(i.codes.shape[1] for i in good)
        codes = torch.zeros(len(good), k, length, dtype=torch.long)
        valid = torch.zeros(len(good), length, dtype=torch.bool)
        for row, item in enumerate(good):
            codes[row, :, : item.codes.shape[1]] = item.codes
            valid[row, : item.codes.shape[1]] = True
    streams = {name: pad_sequences([_float(i.streams[name]) for i in good])
               for name in good[0].streams}
    audio = None
    if good[0].audio_features is not None:
        audio = pad_sequences([_float(i.audio_features) for i in good])
    return Batch(
        ids=[i.id for i in good], clips=[i.clip for i in good], codes=codes, valid=valid,
        streams=streams, audio_features=audio, frame_rate=good[0].frame_rate, skipped=skipped,
    )


def _float(seq: FeatureSequence) -> FeatureSequence:
    return seq if seq.values.dtype == torch.float32 else seq.replace(values=seq.values.float())


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


class CachedClips(Dataset):
    """The clips of a feature cache written by ``v2a extract`` (no video decoding).

    ``cache_dir``: the cache folder (None: the recipe's, see :func:`cache_dir_of`). The cache
    must have been extracted with the recipe's codec, visual encoders and audio encoder (same
    options, same weights files): otherwise a :class:`~v2a.cache.CacheMismatchError` names the
    first difference. An unfinished cache is refused unless ``allow_partial``; a damaged shard
    is a :class:`~v2a.cache.CacheError` naming it and the command that extracts it again, at
    start (its header) or when a clip is read (its checksum). ``split``: only the clips of that
    split (None: all; clips without one are ``train``).

    ``clips`` lists the clips in cache order; ``skipped`` the clips extraction could not use,
    with the reason. Items are :class:`ClipItem`; pass :func:`collate` to a DataLoader.
    """

    def __init__(
        self,
        cache_dir: str | Path | None,
        recipe: Recipe,
        split: str | None = None,
        *,
        allow_partial: bool = False,
    ):
        from v2a.cache import CacheReader

        self.reader = CacheReader(cache_dir if cache_dir is not None else cache_dir_of(recipe),
                                  recipe, allow_partial=allow_partial)
        self.entries = [e for e in self.reader.entries if e.clip.in_split(split)]
        self.split = split

    @property
    def clips(self) -> list[Clip]:
        return [e.clip for e in self.entries]

    @property
    def skipped(self) -> list[Skipped]:
        return self.reader.skipped

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> ClipItem:
        return self.reader.item(self.entries[index])


class LiveClips(Dataset):
    """Clips decoded from their videos and encoded on the fly, item by item.

    The same items as :class:`CachedClips` over the same clips (up to float rounding), without
    a cache: for users without one and for benchmarks. ``manifest``: a manifest file or a list
    of :class:`Clip`; ``root``: where relative paths point (default: ``data.root``, else the
    manifest's folder). The recipe's components are built on first use in each process (so
    DataLoader workers each hold their own) on ``device``. A clip that cannot be used comes back
    as :class:`Skipped`.
    """

    def __init__(
        self,
        manifest: str | Path | Sequence[Clip] | None,
        recipe: Recipe,
        split: str | None = None,
        *,
        root: str | Path | None = None,
        device: str | torch.device = "cpu",
    ):
        if manifest is None:
            manifest = manifest_of(recipe)
        if isinstance(manifest, (str, Path)):
            if root is None:
                root = data_root(recipe, manifest)
            clips = read_manifest(manifest)
        else:
            clips = list(manifest)
            if root is None and recipe.data.root:
                root = Path(recipe.data.root).expanduser()
        import v2a.cache  # noqa: F401  (makes forked DataLoader workers safe for decoding)

        self.clips = [c for c in clips if c.in_split(split)]
        self.root = None if root is None else Path(root)
        self.recipe = recipe
        self.device = device
        self.split = split
        self._encoder = None
        self._pid: int | None = None

    @property
    def encoder(self):
        from v2a.cache import FeatureEncoder

        if self._encoder is None or self._pid != os.getpid():
            self._encoder = FeatureEncoder(self.recipe, device=self.device)
            self._pid = os.getpid()
        return self._encoder

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> ClipItem | Skipped:
        from v2a.cache import decode_clip

        clip = self.clips[index]
        encoder = self.encoder
        decoded = decode_clip(clip, self.root, encoder.request)
        if isinstance(decoded, Skipped):
            return decoded
        return encoder.encode([decoded])[0]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_encoder"] = None  # rebuilt in the worker
        return state


# ---------------------------------------------------------------------------------------------
# `v2a manifest`
# ---------------------------------------------------------------------------------------------
