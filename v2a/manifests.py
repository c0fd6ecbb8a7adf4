"""Manifests: the clips of a dataset, and where a recipe's manifest, data and cache are.

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
* ``caption`` (optional): a text saying what the clip shows or sounds like (the converters fill
  it with the dataset's label; ``v2a synth`` with a description of its objects).

:func:`read_manifest` and :func:`write_manifest` read and write them; :mod:`v2a.converters`
writes them for public dataset layouts.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from v2a.errors import UserError, suggestion
from v2a.files import write_text_atomic
from v2a.recipe import Recipe

MANIFEST_COLUMNS = ("path", "start", "duration", "label", "split", "id", "caption")
DEFAULT_SPLIT = "train"


class ManifestError(UserError):
    """A manifest (or a dataset's own index file) that cannot be read, with the reason."""


@dataclass(frozen=True)
class Clip:
    """One clip of a dataset: a video file and the part of it that may be used.

    ``path`` is as written in the manifest (relative to the data root, or absolute); ``start``
    and ``duration`` are seconds (``duration`` None: to the end of the file); ``id`` is unique
    in a manifest (default: ``path``, or ``path@start`` when ``start`` is not 0); ``caption``
    is a text describing the clip, or None.
    """

    path: str
    start: float = 0.0
    duration: float | None = None
    label: str | None = None
    split: str | None = None
    id: str = ""
    caption: str | None = None

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
        if self.caption is not None:
            row["caption"] = self.caption
        return row

    def record(self) -> dict[str, Any]:
        """Every field by name, in field order, but ``caption`` only when there is one: what the
        feature cache stores and fingerprints, so that clips without a caption give the same
        records (and caches stay valid) as before captions existed."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "caption" or self.caption is not None}


def default_id(path: str, start: float) -> str:
    """A clip's id when the manifest gives none: its path, with ``@start`` when not 0."""
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
        id=text("id") or "", caption=text("caption"),
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
        rows = [c.as_row() for c in clips]
        columns += [name for name in ("id", "caption") if any(name in row for row in rows)]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
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

