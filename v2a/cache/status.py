"""``v2a extract --status CACHE_DIR``: how far a cache's extraction is, from its files alone.

:func:`cache_status` reads ``cache.json`` and every shard's JSON (not ``index.json``, which
rank 0 of a distributed run rewrites only for its own shards until the end), checks each
complete shard's header as :func:`~v2a.cache.shards.shard_damage` does, and estimates the rate
from when the newest shards were written. It writes nothing, so it may run while an extraction
(on any number of ranks) is writing the folder.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2a.cache.errors import CacheError
from v2a.cache.shards import SHARDS, read_json, read_shard_record, shard_damage, shard_name

#: The rate is measured over at most this many of the newest shards...
RATE_SHARDS = 32
#: ...written with no gap longer than this between two of them: a longer pause means an
#: extraction that stopped and a later one that continued, whose rate is the one to tell.
RUN_GAP_SECONDS = 3600.0
#: No shard for this many times the recent time per shard (and a minute at least) means that
#: no extraction is running (it stopped, or a rank hangs): the time left is not told then.
STALL_FACTOR = 10.0
#: Clips named per reason for skipping.
EXAMPLES = 3


@dataclass(frozen=True, kw_only=True)
class SkipReason:
    """Clips skipped for one reason (the reason with the clip's path taken out)."""

    reason: str
    count: int
    examples: tuple[str, ...]  # the paths of the first few


@dataclass(kw_only=True)
class CacheStatus:
    """What :func:`cache_status` found: shards done, to do and damaged, clips extracted and
    skipped (by reason), and the recent rate (None when fewer than two shards tell it)."""

    cache_dir: Path
    shards: int  # in the cache
    done: int  # complete and sound
    damaged: list[str]  # "shards/<file>: why", extracted again by the next `v2a extract`
    manifest_clips: int
    clips: int  # extracted
    skipped: int
    reasons: list[SkipReason] = field(default_factory=list)  # most frequent first
    rate: float | None = None  # clips (extracted or skipped) per second
    rate_shards: int = 0  # how many shards the rate was measured over
    newest_age: float | None = None  # seconds since the newest shard was written

    @property
    def todo(self) -> int:
        """Shards still to extract (the damaged ones included)."""
        return self.shards - self.done

    @property
    def remaining_clips(self) -> int:
        return self.manifest_clips - self.clips - self.skipped

    @property
    def stalled(self) -> bool:
        """Whether no shard came for much longer than the recent rate gives one (see
        :data:`STALL_FACTOR`)."""
        if not self.todo or not self.rate or self.newest_age is None:
            return False
        per_shard = (self.clips + self.skipped) / self.done / self.rate
        return self.newest_age > max(STALL_FACTOR * per_shard, 60.0)

    @property
    def eta(self) -> float | None:
        """Seconds until the cache is complete at the recent rate (None when unknown or when
        no extraction seems to run)."""
        if not self.todo:
            return 0.0
        return self.remaining_clips / self.rate if self.rate and not self.stalled else None

    def as_json(self) -> dict[str, Any]:
        """The status as plain data (``--json``)."""
        return {
            "cache": str(self.cache_dir), "complete": self.todo == 0, "shards": self.shards,
            "done": self.done, "todo": self.todo, "damaged": self.damaged,
            "manifest_clips": self.manifest_clips, "clips": self.clips, "skipped": self.skipped,
            "skip_reasons": [{"reason": r.reason, "count": r.count, "examples": list(r.examples)}
                             for r in self.reasons],
            "rate_clips_per_s": self.rate, "rate_shards": self.rate_shards,
            "newest_shard_age_s": self.newest_age, "stalled": self.stalled, "eta_s": self.eta,
        }

    def report(self) -> str:
        """The status in a few lines for a person."""
        state = "complete" if self.todo == 0 else f"{self.todo} to do"
        lines = [f"{self.cache_dir}: {self.done} of {self.shards} shards done, {state}"
                 + (f" ({len(self.damaged)} damaged)" if self.damaged else ""),
                 f"clips: {self.clips} extracted, {self.skipped} skipped, "
                 f"{self.remaining_clips} to do, of {self.manifest_clips} in the manifest"]
        if self.newest_age is not None:
            rate = (f"{self.rate:.2f} clips/s over the newest {self.rate_shards} shards"
                    if self.rate else "not measured yet (one shard)")
            lines.append(f"rate: {rate}; the newest shard was written "
                         f"{duration(self.newest_age)} ago")
        if self.stalled:
            lines.append("no shard came for far longer than one takes at that rate: no "
                         "extraction seems to run; `v2a extract` with the recipe continues it")
        elif self.todo and self.eta is not None:
            lines.append(f"at that rate the rest takes about {duration(self.eta)}")
        if self.damaged:
            lines.append("damaged (the next `v2a extract` extracts them again):")
            lines += [f"  {d}" for d in self.damaged]
        if self.reasons:
            lines.append("skipped, by reason:")
            lines += [f"  {r.count} x {r.reason} (e.g. {', '.join(r.examples)})"
                      for r in self.reasons]
        return "\n".join(lines)


def duration(seconds: float) -> str:
    """``2 h 05 min``, ``3 min 20 s`` or ``42 s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def cache_status(cache_dir: str | Path) -> CacheStatus:
    """How far the extraction of the cache in ``cache_dir`` is; a folder that holds no cache
    is a :class:`CacheError`."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise CacheError(f"{cache_dir} is not a folder; give the data.cache folder of a recipe")
    if not (cache_dir / "cache.json").is_file():
        raise CacheError(f"{cache_dir} is not a feature cache (it has no cache.json); give the "
                         "data.cache folder `v2a extract` writes")
    meta = read_json(cache_dir / "cache.json", "")
    done: list[tuple[float, dict[str, Any]]] = []  # (when its JSON was written, record)
    damaged = []
    for index in range(meta["shards"]):
        record = read_shard_record(cache_dir, index, meta["key"])
        if record is None:
            continue
        problem = shard_damage(cache_dir, record, meta)
        if problem:
            damaged.append(f"{SHARDS}/{record['file']}: {problem}")
            continue
        try:
            written = (cache_dir / SHARDS / f"{shard_name(index)}.json").stat().st_mtime
        except FileNotFoundError:  # replaced since it was read: its successor counts next time
            continue
        done.append((written, record))
    status = CacheStatus(
        cache_dir=cache_dir, shards=meta["shards"], done=len(done), damaged=damaged,
        manifest_clips=meta["clips"], clips=sum(len(r["clips"]) for _, r in done),
        skipped=sum(len(r["skipped"]) for _, r in done),
        reasons=skip_reasons([s for _, r in sorted(done, key=lambda d: d[1]["shard"])
                              for s in r["skipped"]]),
    )
    if done:
        status.rate, status.rate_shards = recent_rate(done)
        status.newest_age = max(0.0, time.time() - max(w for w, _ in done))
    return status


def recent_rate(done: list[tuple[float, dict[str, Any]]]) -> tuple[float | None, int]:
    """Clips per second over the newest shards of the latest run (see :data:`RATE_SHARDS`),
    and how many shards that is: the clips of all but the oldest of them over the time from the
    oldest to the newest (None when that is under two shards)."""
    newest = sorted(done, key=lambda d: d[0], reverse=True)[:RATE_SHARDS]
    window = newest[:1]
    for shard in newest[1:]:
        if window[-1][0] - shard[0] > RUN_GAP_SECONDS:
            break
        window.append(shard)
    span = window[0][0] - window[-1][0]
    if len(window) < 2 or span <= 0:
        return None, len(window)
    clips = sum(len(r["clips"]) + len(r["skipped"]) for _, r in window[:-1])
    return clips / span, len(window)


def skip_reasons(skipped: list[dict[str, Any]]) -> list[SkipReason]:
    """The skip records grouped by their reason without the clip's path, most frequent first
    (then in order of first appearance), with the first few paths of each."""
    groups: dict[str, list[str]] = defaultdict(list)
    for s in skipped:
        path, reason = s["clip"]["path"], s["reason"]
        head, found, tail = reason.partition(path)
        if found and " " not in head:  # the reason starts with the clip's (full) path
            reason = tail.lstrip(": ").strip() or reason
        groups[reason].append(path)
    ordered = sorted(groups.items(), key=lambda g: -len(g[1]))  # stable: first seen first
    return [SkipReason(reason=reason, count=len(paths), examples=tuple(paths[:EXAMPLES]))
            for reason, paths in ordered]
