"""``v2a extract``: a recipe's frozen components once over a manifest, into a feature cache (see
:mod:`v2a.cache` for the layout and guarantees).

:func:`extract` runs in named steps: :func:`_open_run` reads the manifest and checks an
existing cache against the recipe, :func:`_complete_shards` finds the shards that are done and
sound, :func:`_start_cache` writes ``cache.json`` for a new cache, :func:`_extract_shards`
decodes (in worker processes), encodes (in batches) and writes the others, and
:func:`_summary` reports. Decoding starts before the models move to the GPU, so that the
worker processes fork from a process that has not touched it.

Under torchrun every rank runs :func:`extract`: the ranks share the checks (rank ``r`` checks
the shards ``r``, ``r + world_size``, ...), agree on the shards still to do and take them in
turn (the ``j``-th shard to do goes to rank ``j mod world_size``); rank 0 alone writes
``cache.json`` (before the others write a shard), ``index.json`` and ``skipped.tsv`` (once all
ranks are done, from every shard's JSON on disk). Each rank writes only its own shards, through
the same atomic files as one process does, so the cache is the one a single process writes,
byte for byte, and a rank that dies loses only the shard it was writing. The ranks wait for
each other three times: after the checks (:func:`_complete_shards`), for ``cache.json``
(:func:`_wait_for_cache_json`) and at the end (:func:`_collect_shards`); a wait that fails
because a rank ended is a :class:`~v2a.distributed.DistributedError`, one sentence.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from v2a.cache.decoding import Decoded, decoded_clips
from v2a.cache.encoding import FeatureEncoder
from v2a.cache.errors import CacheError, CacheMismatchError
from v2a.cache.identity import cache_identity, cache_key, check_identity, manifest_fingerprint
from v2a.cache.shards import (
    DEFAULT_SHARD_SIZE,
    DTYPES,
    SHARDS,
    clip_from_record,
    codes_dtype,
    read_json,
    read_shard_record,
    shard_damage,
    shard_name,
    skipped_tsv,
    write_index,
    write_shard,
)
from v2a.distributed import Distributed, DistributedError, peers_failing_as, setup_distributed
from v2a.errors import UserError
from v2a.files import remove_stale_temporaries, write_text_atomic
from v2a.items import ClipItem, Skipped
from v2a.manifests import Clip, ManifestError, cache_dir_of, data_root, manifest_of, read_manifest
from v2a.recipe import Recipe


@dataclass
class ExtractSummary:
    """The outcome of :func:`extract`: counts over the whole cache and this run's work."""

    cache_dir: Path
    clips: int  # clips in the cache
    skipped: list[Skipped]  # clips that could not be used, with the reason
    shards: int
    shards_done_now: int
    clips_done_now: int
    seconds: float
    bytes: int
    damaged: list[str] = dataclasses.field(default_factory=list)  # shards found bad, and why
    verified: int = 0  # shards whose checksum this run checked (--verify)

    def report(self, limit: int = 20) -> str:
        rate = self.clips_done_now / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{self.cache_dir}: {self.clips} clips in {self.shards} shards "
            f"({self.bytes / 2**20:.1f} MiB); this run extracted {self.clips_done_now} clips in "
            f"{self.seconds:.1f} s ({rate:.2f} clips/s)"
        ]
        if self.verified:
            lines.append(f"checked the checksums of {self.verified} shards: "
                         f"{len(self.damaged) or 'none'} damaged")
        if self.damaged:
            lines.append(f"extracted {len(self.damaged)} damaged shards again:")
            lines += [f"  {d}" for d in self.damaged]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} clips:")
            lines += [f"  {s.reason}" for s in self.skipped[:limit]]
            if len(self.skipped) > limit:
                lines.append(f"  ... and {len(self.skipped) - limit} more: see "
                             f"{self.cache_dir / 'skipped.tsv'}")
        return "\n".join(lines)


def default_device() -> str:
    """Where the models run when no device is given: CUDA when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


#: How long a rank waits in a collective operation for the others (the process group is gloo's,
#: whatever the device: the ranks only exchange a few lists). A rank that ends (an error, a
#: kill, out of memory) closes its connections, and gloo fails the others' wait at once, so this
#: only bounds a rank that hangs or a machine that drops off the network. It must outlast the
#: gap between the first and the last rank to finish: dealt out in turn, the ranks' shares differ
#: by one shard at most, but ranks on slower GPUs or disks, or with slower videos to decode, drift
#: apart over a run of days -- two days of drift kills no healthy run we can foresee.
PEER_TIMEOUT = datetime.timedelta(hours=48)


@dataclass(kw_only=True)
class _Run:
    """What one :func:`extract` call works on: the manifest's clips, where their files and the
    cache are, the cache's key and format (``meta``: its ``cache.json``, None for a new cache),
    and, once checked, the complete shards of every rank (``complete``), the records this rank
    holds (``records``, by index: all of the complete ones on rank 0), the damaged shards and
    how many checksums were checked."""

    root: Path
    cache_dir: Path
    clips: list[Clip]
    identity: dict[str, Any]
    key: str
    fingerprint: str
    meta: dict[str, Any] | None
    shard_size: int
    dtype: str
    complete: set[int] = dataclasses.field(default_factory=set)
    records: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    damaged: list[str] = dataclasses.field(default_factory=list)  # "shards/<file>: why"
    verified: int = 0

    @property
    def total(self) -> int:
        """How many shards the cache has."""
        return -(-len(self.clips) // self.shard_size)

    @property
    def todo(self) -> list[int]:
        """The shards still to extract (unfinished or damaged)."""
        return [i for i in range(self.total) if i not in self.complete]

    def shard_clips(self, index: int) -> list[Clip]:
        """The manifest's clips of shard ``index``."""
        return self.clips[index * self.shard_size:(index + 1) * self.shard_size]


def extract(
    recipe: Recipe,
    *,
    workers: int | None = None,
    batch_size: int = 8,
    shard_size: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    progress: bool = True,
    verify: bool = False,
    distributed: Distributed | None = None,
) -> ExtractSummary:
    """Extract the cache of ``recipe`` (``data.manifest``, ``data.root``, ``data.cache``),
    continuing an unfinished one and redoing damaged shards. See :mod:`v2a.cache` for the
    layout and guarantees.

    ``workers``: decoding processes (default ``data.num_workers``; 0 decodes in this process);
    ``batch_size``: clips per forward pass; ``shard_size``: clips per shard (default 256, then
    the cache's own); ``dtype``: ``float16`` (default) or ``float32`` for the features;
    ``verify``: check every shard's checksum too (reads the whole cache), not only its header;
    ``device``: where the models run (default CUDA when there is one; ``cuda`` under torchrun
    is the local rank's GPU); ``distributed``: the process group (default: the one torchrun
    describes in the environment, joined here with gloo; none when run alone), whose device
    replaces ``device``.

    Under torchrun every rank calls this (see the module's docstring for who does what); rank
    0's summary covers the whole cache, another rank's only the shards it checked or extracted.
    """
    started = time.perf_counter()
    manifest, clips = _manifest_clips(recipe)
    workers = recipe.data.num_workers if workers is None else workers
    _check_options(workers, batch_size, shard_size, dtype)
    group = distributed or setup_distributed(device, backend="gloo", timeout=PEER_TIMEOUT)
    run = _open_run(recipe, manifest, clips, shard_size, dtype)
    _complete_shards(run, verify, group)
    todo = run.todo
    if not todo:  # finished already: report it without building anything
        if group.main:
            write_index(run.cache_dir, run.key, run.records, run.total)
        return _summary(run, [], started, main=group.main)
    encoder = FeatureEncoder(recipe, device="cpu")
    writing = _CacheWrites(recipe, run, group)
    if group.main:
        with writing:
            _start_cache(run, encoder)
    _wait_for_cache_json(run, group)
    mine = todo[group.rank::group.world_size]  # the j-th shard to do goes to rank j mod world
    _extract_shards(run, mine, encoder, workers=workers, batch_size=batch_size,
                    device=str(group.device), writing=writing, progress=progress, group=group)
    _collect_shards(run, todo, group)
    with writing:
        return _summary(run, todo if group.main else mine, started, main=group.main)


def _manifest_clips(recipe: Recipe) -> tuple[Path, list[Clip]]:
    """The recipe's manifest and its clips; a manifest without clips is a :class:`ManifestError`."""
    manifest = manifest_of(recipe)
    clips = read_manifest(manifest)
    if not clips:
        raise ManifestError(f"the manifest {manifest} lists no clips")
    return manifest, clips


def _check_options(workers: int, batch_size: int, shard_size: int | None,
                   dtype: str | None) -> None:
    """Refuse, in one sentence, option values :func:`extract` cannot use."""
    if workers < 0 or batch_size < 1 or (shard_size is not None and shard_size < 1):
        raise UserError("--workers must be 0 or more, --batch-size and --shard-size 1 or more")
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"the dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")


def _open_run(recipe: Recipe, manifest: Path, clips: list[Clip], shard_size: int | None,
              dtype: str | None) -> _Run:
    """The run over ``clips``: a new cache with the given (or default) shard size and dtype, or
    the existing one, whose key, manifest, shard size and dtype must be those asked for (else a
    :class:`CacheMismatchError` naming the difference)."""
    cache_dir = cache_dir_of(recipe)
    identity = cache_identity(recipe)
    fingerprint = manifest_fingerprint(clips)
    meta_path = cache_dir / "cache.json"
    meta = None
    if meta_path.exists():
        meta = read_json(meta_path, "")
        check_identity(cache_dir, meta, identity)
        if meta.get("manifest") != fingerprint:
            raise CacheMismatchError(
                f"the cache in {cache_dir} was extracted from another manifest "
                f"({meta.get('clips')} clips, now {len(clips)} from {manifest}); give another "
                "data.cache folder, or delete this one"
            )
        for name, asked in (("shard_size", shard_size), ("dtype", dtype)):
            if asked is not None and asked != meta[name]:
                raise CacheMismatchError(
                    f"the cache in {cache_dir} has {name} {meta[name]}, not {asked}; continue it "
                    f"without --{name.replace('_', '-')}, or give another data.cache folder"
                )
        shard_size, dtype = meta["shard_size"], meta["dtype"]
    return _Run(root=data_root(recipe, manifest), cache_dir=cache_dir, clips=clips, identity=identity, key=cache_key(identity),
                fingerprint=fingerprint, meta=meta, shard_size=shard_size or DEFAULT_SHARD_SIZE,
                dtype=dtype or "float16")


def _complete_shards(run: _Run, verify: bool, group: Distributed) -> None:
    """Remove the temporaries killed runs left on this machine (one rank per machine does),
    check this rank's share of the shards (every ``world_size``-th from its rank: header and
    size; with ``verify``, the checksum too), then agree with the other ranks: ``run.complete``,
    ``run.damaged`` and ``run.verified`` cover every rank's share, ``run.records`` this rank's
    complete shards -- and on rank 0 the others' too, read from disk."""
    if group.local_rank == 0:
        for folder in (run.cache_dir, run.cache_dir / SHARDS):
            remove_stale_temporaries(folder)  # left by a killed run
    damaged: list[tuple[int, str]] = []
    for i in range(group.rank, run.total, group.world_size):
        record = read_shard_record(run.cache_dir, i, run.key)
        if record is None:
            continue  # never finished: extracted below
        problem = shard_damage(run.cache_dir, record, run.meta, verify=verify)
        if problem:
            damaged.append((i, f"{SHARDS}/{record['file']}: {problem}"))
        else:
            run.records[i] = record
    verified = len(damaged) + sum(1 for r in run.records.values() if r.get("sha256")) if verify else 0
    with peers_failing_as("another rank of this extraction ended while the shards were being "
                          "checked (its own error says why)"):
        shares = group.gather((sorted(run.records), damaged, verified))
    for complete, _, checked in shares:
        run.complete.update(complete)
        run.verified += checked
    run.damaged = [why for _, why in sorted(d for _, bad, _ in shares for d in bad)]
    if group.main:
        for i in sorted(run.complete - run.records.keys()):
            run.records[i] = _record_written_elsewhere(run, i)


def _record_written_elsewhere(run: _Run, index: int) -> dict[str, Any]:
    """The record of shard ``index``, which another rank checked or wrote; a
    :class:`DistributedError` when rank 0 cannot read it (the ranks' cache folders differ)."""
    record = read_shard_record(run.cache_dir, index, run.key)
    if record is None:
        raise DistributedError(
            f"rank 0 cannot read {run.cache_dir / SHARDS / shard_name(index)}.json, which "
            "another rank found or wrote; on several machines, data.cache must be a folder on a "
            "file system they all share")
    return record


def _start_cache(run: _Run, encoder: FeatureEncoder) -> None:
    """Write ``cache.json`` for a new cache (its key, format and the encoders' layout), and the
    index of what is complete."""
    if run.meta is None:
        run.cache_dir.mkdir(parents=True, exist_ok=True)
        run.meta = {"key": run.key, "identity": run.identity, "dtype": run.dtype,
                    "shard_size": run.shard_size, "manifest": run.fingerprint,
                    "clips": len(run.clips), "shards": run.total, "layout": encoder.layout()}
        write_text_atomic(run.cache_dir / "cache.json", json.dumps(run.meta, indent=1) + "\n")
    write_index(run.cache_dir, run.key, run.records, run.total)


def _wait_for_cache_json(run: _Run, group: Distributed) -> None:
    """Under torchrun: wait until rank 0 has written ``cache.json`` (no shard is ever written
    before it), and check that every rank sees it (one cache folder for all)."""
    if not group.enabled:
        return
    with peers_failing_as("another rank of this extraction ended before it began (its own "
                          "error says why)"):
        group.barrier()
    if not (run.cache_dir / "cache.json").is_file():
        raise DistributedError(
            f"rank {group.rank} does not see {run.cache_dir / 'cache.json'}, which rank 0 wrote; "
            "on several machines, data.cache must be a folder on a file system they all share")


def _extract_shards(run: _Run, todo: list[int], encoder: FeatureEncoder, *, workers: int,
                    batch_size: int, device: str, writing: _CacheWrites, progress: bool,
                    group: Distributed) -> None:
    """Decode the clips of the shards ``todo`` in ``workers`` processes, encode them
    ``batch_size`` at a time on ``device`` and write each shard (and, on rank 0, the index) as
    it is done, with a progress bar on rank 0 (unless not ``progress``): of the whole cache when
    alone, of rank 0's own shards under torchrun."""
    pending = [c for i in todo for c in run.shard_clips(i)]
    stream = decoded_clips(pending, run.root, encoder.request, workers)  # forks before any GPU use
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(device)  # the rank's GPU for any code that assumes the current one
    encoder.to(device)
    torch_dtype = DTYPES[run.dtype]
    code_dtype = codes_dtype(encoder.codec.codebook_size if encoder.codec is not None else None)
    if group.enabled:
        total, done_before, desc = len(pending), 0, f"extracting (rank 0 of {group.world_size})"
    else:
        total, desc = len(run.clips), "extracting"
        done_before = sum(len(r["clips"]) + len(r["skipped"]) for r in run.records.values())
    skipped_now = 0
    bar = tqdm(total=total, initial=done_before, unit="clip", desc=desc,
               disable=not (progress and group.main), dynamic_ncols=True, smoothing=0.05)

    def decoded_one(item: Decoded | Skipped) -> None:
        nonlocal skipped_now
        if isinstance(item, Skipped):
            skipped_now += 1
            bar.set_postfix(skipped=skipped_now, refresh=False)
        bar.update(1)

    try:
        for index in todo:
            shard_clips = run.shard_clips(index)
            items = _encode_shard(len(shard_clips), stream, encoder, batch_size, decoded_one)
            with writing:
                run.records[index] = write_shard(run.cache_dir, index, run.key,
                                                 index * run.shard_size, items, torch_dtype,
                                                 code_dtype)
                run.complete.add(index)
                if group.main:
                    write_index(run.cache_dir, run.key, run.records, run.total)
    finally:
        bar.close()
        del stream  # stops the decoding workers


def _collect_shards(run: _Run, todo: list[int], group: Distributed) -> None:
    """Under torchrun: wait until every rank has written its shards, then (rank 0) read the
    records of the others' from disk and write the final index."""
    if not group.enabled:
        return
    with peers_failing_as("another rank of this extraction ended before it finished its shards "
                          "(its own error says why); the complete shards are kept: run the same "
                          "command again to extract the rest"):
        group.barrier()
    if group.main:
        for i in todo:
            if i not in run.records:
                run.records[i] = _record_written_elsewhere(run, i)
                run.complete.add(i)
        write_index(run.cache_dir, run.key, run.records, run.total)


def _encode_shard(count: int, stream: Iterator[Decoded | Skipped], encoder: FeatureEncoder,
                  batch_size: int, decoded_one: Callable[[Decoded | Skipped], None],
                  ) -> list[ClipItem | Skipped]:
    """The next ``count`` clips of ``stream`` as items, in order: each decoded clip encoded in
    batches of ``batch_size``, each skipped one as it is; ``decoded_one`` is told of each clip
    as it arrives."""
    items: list[ClipItem | Skipped | None] = [None] * count
    batch: list[tuple[int, Decoded]] = []

    def flush() -> None:
        for (pos, _), item in zip(batch, encoder.encode([d for _, d in batch])):
            items[pos] = item
        batch.clear()

    for pos in range(count):
        decoded = next(stream)
        if isinstance(decoded, Skipped):
            items[pos] = decoded
        else:
            batch.append((pos, decoded))
            if len(batch) == batch_size:
                flush()
        decoded_one(decoded)
    if batch:
        flush()
    return items


class _CacheWrites:
    """A context for writing into the cache: a folder that refuses a file (read-only, no
    permission, a full disk) is a :class:`CacheError` naming it, the error, what is complete and
    the command that continues."""

    def __init__(self, recipe: Recipe, run: _Run, group: Distributed):
        self.recipe, self.run, self.group = recipe, run, group

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, traceback) -> None:
        if not isinstance(exc, OSError):
            return
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        once = "its disk has space again" if full else "the folder is writable"
        again = (f"`{self.recipe.command_line('extract')}`" if not self.group.enabled
                 else "the same torchrun command")
        complete = f"{len(self.run.complete)} of {self.run.total} shards are complete"
        if self.group.enabled:
            complete = (f"rank {self.group.rank} stopped, with {len(self.run.complete)} of "
                        f"{self.run.total} shards complete that it knows of")
        raise CacheError(
            f"cannot write the feature cache in {self.run.cache_dir} ({exc.strerror or exc}); "
            f"{complete}: continue with {again} once {once}"
        ) from None


def _summary(run: _Run, todo: Sequence[int], started: float, *, main: bool = True
             ) -> ExtractSummary:
    """Sum up the shards of ``run.records`` and this run's work (``todo``: the shards it
    extracted), and (``main``: rank 0 or alone) write ``skipped.tsv``."""
    records = run.records
    skipped = [Skipped(clip_from_record(s["clip"]), s["reason"])
               for _, r in sorted(records.items()) for s in r["skipped"]]
    if main:
        write_text_atomic(run.cache_dir / "skipped.tsv", skipped_tsv(skipped))
    return ExtractSummary(
        cache_dir=run.cache_dir, clips=sum(len(r["clips"]) for r in records.values()),
        skipped=skipped, shards=run.total, shards_done_now=len(todo),
        clips_done_now=sum(len(run.shard_clips(i)) for i in todo),
        seconds=time.perf_counter() - started, bytes=sum(r["bytes"] for r in records.values()),
        damaged=list(run.damaged), verified=run.verified,
    )
