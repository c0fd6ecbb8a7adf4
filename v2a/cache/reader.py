"""Reading a feature cache: :class:`CacheReader` checks a cache folder against a recipe and
reads one clip's tensors at a time (see :mod:`v2a.cache` for the checks it makes); its
:class:`CacheEntries` say where each clip's tensors are."""

from __future__ import annotations

import math
import os
from array import array
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, overload

import numpy as np
from torch import Tensor

from v2a.cache.errors import CacheError
from v2a.cache.identity import cache_identity, check_identity
from v2a.cache.shards import (
    SHARDS,
    clip_from_record,
    read_json,
    read_shard_record,
    row_digest,
    shard_damage,
    shard_name,
    shard_tensors,
)
from v2a.items import ClipItem, Skipped
from v2a.manifests import DEFAULT_SPLIT, Clip
from v2a.recipe import Recipe
from v2a.sequences import FeatureSequence


@dataclass(frozen=True)
class CacheEntry:
    """Where one clip's tensors are: shard file, row and tensor names, with each stream's start
    and the SHA-256 of the tensors (None in shards written before v2a recorded it)."""

    clip: Clip
    file: str
    row: int
    starts: tuple[tuple[str, float], ...]
    audio_start: float | None
    names: tuple[str, ...] = ()
    sha256: str | None = None


class _Texts:
    """Optional strings, one per clip, in one UTF-8 buffer: string ``i`` is the bytes from
    ``ends[i - 1]`` (0 for the first) to ``ends[i]``, None where ``present[i]`` is 0 (encoded
    with ``surrogatepass``, so that every Python string, even one holding a lone surrogate of an
    undecodable file name, comes back as it was). Filled by :meth:`extend` while the reader
    opens the cache, then only read."""

    def __init__(self) -> None:
        self.buffer, self.ends, self.present = bytearray(), array("q"), array("b")

    def extend(self, values: list[str | None]) -> None:
        encoded = [b"" if v is None else v.encode("utf-8", "surrogatepass") for v in values]
        start = len(self.buffer)
        self.ends.extend(start + end for end in accumulate(map(len, encoded)))
        self.buffer += b"".join(encoded)
        self.present.extend(v is not None for v in values)

    def __getitem__(self, i: int) -> str | None:
        if not self.present[i]:
            return None
        text = self.buffer[self.ends[i - 1] if i else 0:self.ends[i]]
        return text.decode("utf-8", "surrogatepass")


class _Repeated:
    """Values, one per clip, drawn from few distinct ones (shard files, splits, the tensor names
    of a row): each distinct value once in ``values``, and an int32 code per clip."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.codes = array("i")
        self._code_of: dict[Hashable, int] = {}

    def extend(self, values: Iterable[Hashable]) -> None:
        for value in values:
            code = self._code_of.setdefault(value, len(self.values))
            if code == len(self.values):
                self.values.append(value)
            self.codes.append(code)

    def __getitem__(self, i: int) -> Any:
        return self.values[self.codes[i]]


def _float_or_none(x: float) -> float | None:
    return None if math.isnan(x) else x


class _EntryColumns:
    """The fields of every clip's :class:`CacheEntry`, one column each (see
    :class:`CacheEntries`): strings in :class:`_Texts`, repeating values in
    :class:`_Repeated`, numbers in arrays of float64 (NaN for None: a manifest's times are
    finite) or int32; each clip's stream starts, in its record's order, follow one another in
    ``stream_starts``, ``stream_ends[i]`` ending clip ``i``'s."""

    def __init__(self) -> None:
        self.path, self.id, self.label, self.sha256 = _Texts(), _Texts(), _Texts(), _Texts()
        self.caption = _Texts()
        self.split, self.file, self.names, self.streams = (_Repeated(), _Repeated(),
                                                           _Repeated(), _Repeated())
        self.start, self.duration, self.audio_start = array("d"), array("d"), array("d")
        self.row = array("i")
        self.stream_starts, self.stream_ends = array("d"), array("q")

    def __len__(self) -> int:
        return len(self.row)

    def extend(self, *, file: str, records: list[dict[str, Any]],
               names: dict[int, tuple[str, ...]]) -> None:
        """The clips of a shard: their records in the JSON of the shard ``file``, and their
        tensors' names by row."""
        clips = [clip_from_record(r["clip"]) for r in records]
        self.path.extend([c.path for c in clips])
        self.id.extend([c.id for c in clips])
        self.label.extend([c.label for c in clips])
        self.caption.extend([c.caption for c in clips])
        self.split.extend(c.split for c in clips)
        self.start.extend(c.start for c in clips)
        self.duration.extend(math.nan if c.duration is None else c.duration for c in clips)
        self.file.extend([file] * len(records))
        self.row.extend(r["row"] for r in records)
        self.names.extend(names[r["row"]] for r in records)
        self.streams.extend(tuple(r["starts"]) for r in records)
        for r in records:
            self.stream_starts.extend(r["starts"].values())
            self.stream_ends.append(len(self.stream_starts))
        audio_starts = (r.get("audio_start") for r in records)
        self.audio_start.extend(math.nan if a is None else a for a in audio_starts)
        self.sha256.extend([r.get("sha256") for r in records])

    def clip(self, i: int) -> Clip:
        return Clip(path=self.path[i], start=self.start[i],
                    duration=_float_or_none(self.duration[i]), label=self.label[i],
                    split=self.split[i], id=self.id[i], caption=self.caption[i])

    def entry(self, i: int) -> CacheEntry:
        streams = self.streams[i]
        first = self.stream_ends[i - 1] if i else 0
        return CacheEntry(
            clip=self.clip(i), file=self.file[i], row=self.row[i],
            starts=tuple(zip(streams, self.stream_starts[first:first + len(streams)])),
            audio_start=_float_or_none(self.audio_start[i]), names=self.names[i],
            sha256=self.sha256[i])


class CacheEntries(Sequence[CacheEntry]):
    """The clips of a cache (or of one of its splits), in cache order: a read-only sequence of
    :class:`CacheEntry`, each built when asked for.

    Why columns: VGGSound's 200,000 clips as entry objects (each with its clip, tuples and
    strings) are some 3.3 million Python objects, 17 a clip, and every DataLoader worker forked
    from the trainer copies the memory pages of those it reads, since reading an object writes
    to it (its reference count; the garbage collector's passes). Here they are a few dozen flat
    buffers (``array``, ``bytearray``) that no worker writes to, shared by all: memory stays
    flat as workers are added, and a pickle (spawned workers) is a copy of the buffers."""

    def __init__(self, *, columns: _EntryColumns, positions: np.ndarray | None = None):
        self._columns = columns
        self._positions = np.arange(len(columns)) if positions is None else positions

    def __len__(self) -> int:
        return len(self._positions)

    @overload
    def __getitem__(self, index: int) -> CacheEntry: ...
    @overload
    def __getitem__(self, index: slice) -> CacheEntries: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return CacheEntries(columns=self._columns, positions=self._positions[index])
        return self._columns.entry(int(self._positions[index]))

    def __iter__(self) -> Iterator[CacheEntry]:
        return (self._columns.entry(int(i)) for i in self._positions)

    def clip(self, index: int) -> Clip:
        """The clip of entry ``index`` (without building the entry)."""
        return self._columns.clip(int(self._positions[index]))

    def in_split(self, split: str | None) -> CacheEntries:
        """The entries whose clip belongs to ``split`` (as :meth:`Clip.in_split`: None is
        every split, a clip without one is ``train``)."""
        if split is None:
            return self
        splits = self._columns.split
        chosen = [code for code, name in enumerate(splits.values)
                  if (name or DEFAULT_SPLIT) == split]
        codes = np.frombuffer(splits.codes, dtype=np.int32)[self._positions]
        kept = self._positions[np.isin(codes, chosen)]
        return CacheEntries(columns=self._columns, positions=kept)


class CacheReader:
    """A cache folder checked against a recipe; :meth:`item` reads one clip's tensors.

    Every shard's header is checked at start and every clip's tensors when read (see the
    module's docstring): a damaged shard is a :class:`CacheError` naming it and the command that
    extracts it again. Shard files are opened lazily (memory-mapped by safetensors), at most
    ``open_files`` at a time, and re-opened after a fork (DataLoader workers)."""

    def __init__(self, cache_dir: str | Path, recipe: Recipe, *, allow_partial: bool = False,
                 open_files: int = 32):
        self.cache_dir = cache_dir = Path(cache_dir)
        extract_command = recipe.command_line("extract")
        if not (cache_dir / "cache.json").is_file():
            raise CacheError(
                f"there is no feature cache in {cache_dir}; write it with `{extract_command}`"
            )
        self.meta = read_json(cache_dir / "cache.json", "")
        check_identity(cache_dir, self.meta, cache_identity(recipe))
        self.key = self.meta["key"]
        self.repair_command = recipe.command_line("extract", "--verify")
        index = read_json(cache_dir / "index.json", f"extract the cache again with `{extract_command}`")
        if not index.get("complete") and not allow_partial:
            raise CacheError(
                f"the cache in {cache_dir} is unfinished ({len(index['shards'])} of "
                f"{index['total_shards']} shards); finish it with `{extract_command}` "
                "(it continues where it stopped)"
            )
        layout = self.meta["layout"]
        self.frame_rate = layout["codec"]["frame_rate"] if layout["codec"] else None
        self.stream_rates = {name: s["rate"] for name, s in layout["streams"].items()}
        self.audio_rate = layout["audio_features"]["rate"] if layout["audio_features"] else None
        columns = _EntryColumns()
        self.skipped: list[Skipped] = []
        for shard in index["shards"]:
            record = read_shard_record(cache_dir, shard["shard"], self.key)
            if record is None:
                raise CacheError(
                    f"shard {shard_name(shard['shard'])} of the cache in {cache_dir} is missing; "
                    f"extract it again with `{extract_command}`"
                )
            problem = shard_damage(cache_dir, record, self.meta)
            if problem:
                raise self.damaged(record["file"], problem)
            names = {row: tuple(tensors)
                     for row, tensors in shard_tensors(record, self.meta).items()}
            columns.extend(file=record["file"], records=record["clips"], names=names)
            self.skipped += [Skipped(clip_from_record(s["clip"]), s["reason"]) for s in record["skipped"]]
        self.entries = CacheEntries(columns=columns)
        self.open_files = open_files
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self._pid = os.getpid()

    def damaged(self, file: str, problem: str) -> CacheError:
        """The error for a damaged shard: its file, what is wrong, and the command that redoes it."""
        return CacheError(
            f"the shard {self.cache_dir / SHARDS / file} is damaged ({problem}); extract it again "
            f"with `{self.repair_command}`"
        )

    def _handle(self, file: str):
        from safetensors import safe_open

        if self._pid != os.getpid():  # a forked worker: its own handles
            self._handles, self._pid = OrderedDict(), os.getpid()
        handle = self._handles.get(file)
        if handle is None:
            try:
                handle = safe_open(str(self.cache_dir / SHARDS / file), framework="pt")
            except Exception as exc:  # changed since the check at start
                raise self.damaged(file, f"it cannot be opened: {exc}") from None
            self._handles[file] = handle
            while len(self._handles) > self.open_files:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(file)
        return handle

    def tensors(self, entry: CacheEntry) -> dict[str, Tensor]:
        """The clip's tensors as stored (by name), checked against their SHA-256."""
        handle = self._handle(entry.file)
        try:
            tensors = {name: handle.get_tensor(name) for name in entry.names}
        except Exception as exc:
            raise self.damaged(entry.file, f"the tensors of {entry.clip.id} cannot be read: "
                                           f"{exc}") from None
        if entry.sha256 is not None and row_digest(tensors) != entry.sha256:
            raise self.damaged(entry.file, f"the tensors of {entry.clip.id} changed since "
                                           "extraction: their checksum differs")
        return tensors

    def item(self, entry: CacheEntry) -> ClipItem:
        tensors = self.tensors(entry)
        codes = None
        if self.frame_rate is not None:
            codes = tensors[f"{entry.row}.codes"].long()
        streams = {
            name: FeatureSequence(values=tensors[f"{entry.row}.stream.{name}"].unsqueeze(0),
                                  rate=self.stream_rates[name], start=start)
            for name, start in entry.starts
        }
        audio = None
        if self.audio_rate is not None:
            audio = FeatureSequence(values=tensors[f"{entry.row}.audio"].unsqueeze(0),
                                    rate=self.audio_rate, start=entry.audio_start or 0.0)
        return ClipItem(clip=entry.clip, codes=codes, streams=streams, audio_features=audio,
                        frame_rate=self.frame_rate)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()  # safetensors handles do not pickle
        return state
