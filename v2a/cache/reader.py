"""Reading a feature cache: :class:`CacheReader` checks a cache folder against a recipe and
reads one clip's tensors at a time (see :mod:`v2a.cache` for the checks it makes)."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from v2a.manifests import Clip
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
        self.entries: list[CacheEntry] = []
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
            rows = shard_tensors(record, self.meta)
            for c in record["clips"]:
                self.entries.append(CacheEntry(
                    clip=clip_from_record(c["clip"]), file=record["file"], row=c["row"],
                    starts=tuple(c["starts"].items()), audio_start=c.get("audio_start"),
                    names=tuple(rows[c["row"]]), sha256=c.get("sha256")))
            self.skipped += [Skipped(clip_from_record(s["clip"]), s["reason"]) for s in record["skipped"]]
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
