"""The feature cache: ``v2a extract`` runs a recipe's frozen components once over a dataset.

For every clip of the manifest (a window of ``data.clip_seconds`` from the clip's start) the
cache holds the codec's codes, each visual encoder's feature sequence and the audio encoder's
features, with their rates, so that training reads tensors and never decodes a video.

Layout of a cache folder::

    cache.json                 what was extracted: the cache key, the components' resolved
                               options, v2a's version, the window, the dtype, the shard size, the
                               manifest's fingerprint, each stream's rate and width
    index.json                 the complete shards only, with clip and skip counts, and whether
                               the cache is complete; rewritten (atomically) after each shard
    shards/000000.safetensors  the tensors of shard 0: "<row>.codes" [k, l] int16 (int32 for
                               codebooks over 32768 entries), "<row>.stream.<name>" [t, d],
                               "<row>.audio" [t, d] (float16 by default)
    shards/000000.json         its clips (manifest fields, row, each stream's start, the SHA-256
                               of the clip's tensors) and the clips it skipped, with the reason,
                               and the SHA-256 of the tensor file; written after the tensors, so
                               it marks the shard complete
    skipped.tsv                every skipped clip and why (file, reason), rewritten at the end

Shard ``i`` always holds the manifest's clips ``[i * shard_size, (i + 1) * shard_size)``, and
every file is written to a temporary name and renamed (:func:`v2a.files.atomic_output`), so a
killed extraction leaves complete shards and temporary files; ``v2a extract`` run again deletes
the temporaries of dead processes, keeps the complete shards and extracts the others: nothing is
done twice and the result is the one an uninterrupted run gives, byte for byte.

Damaged shards (a disk or a copy that changed some bytes) are found, and never reach training:

* every ``v2a extract`` run, and every :class:`CacheReader` (training) at start, checks each
  complete shard cheaply: its size, and its safetensors header (the tensor names its JSON
  implies, their dtypes, shapes and offsets, the cache key) -- a few hundred bytes per shard;
* the reader checks each clip's tensors against the SHA-256 recorded for them every time it
  reads them: a hash of the bytes just read, with no extra I/O, in whichever DataLoader worker
  reads them (hashing whole shards when a process first opens them would read a cache of
  hundreds of gigabytes once more per worker process and per validation);
* ``v2a extract --verify`` also hashes every shard file (reading the whole cache) against its
  recorded SHA-256.

A shard that fails a check is extracted again by ``v2a extract`` (with ``--verify`` for a
checksum), alone; training stops with one sentence naming the shard file and that command, with
the user's overrides. Shards written before v2a recorded checksums get the header check only.

The cache key is a hash of v2a's version, the window, and the resolved options of the codec,
each visual encoder (by stream name) and the audio encoder, where a local weights file counts by
its content (SHA-256), not its path. A recipe whose key differs from the cache's is refused, by
``v2a extract`` and by :class:`~v2a.datasets.CachedClips` alike, with a sentence naming the first
difference: features of a changed encoder are never mixed with old ones, and a cache of
hundreds of gigabytes is never replaced behind the user's back. Give another ``data.cache``
folder (or delete the old one) to extract again.

Decoding runs in ``--workers`` processes (a :class:`torch.utils.data.DataLoader`); the models run
in the process that started them on batches of clips, on the GPU when there is one. Under
``torchrun --nproc_per_node N -m v2a extract`` each of the N ranks is such a process, with its
own GPU (``LOCAL_RANK``'s) and decoding workers: the ranks deal out the shards still to do
(the ``j``-th to rank ``j mod N``), each writes only its own, and rank 0 alone writes
``cache.json`` (before the others start), ``index.json`` and ``skipped.tsv`` (once all are done,
from the shards' JSON files), so the cache is the one a single process writes, byte for byte; a
rank that dies loses only the shard it was writing, and the same command continues. ``v2a
extract --status CACHE_DIR`` (:func:`cache_status`) reads the shards' JSON files to tell how far
an extraction is, also while one runs.

Modules: :mod:`~v2a.cache.identity` (what a recipe extracts, the cache key),
:mod:`~v2a.cache.decoding` (clips decoded in worker processes), :mod:`~v2a.cache.encoding`
(the batched :class:`FeatureEncoder`), :mod:`~v2a.cache.shards` (the file format and its
checks), :mod:`~v2a.cache.extraction` (:func:`extract`), :mod:`~v2a.cache.status`
(:func:`cache_status`) and :mod:`~v2a.cache.reader` (:class:`CacheReader`); this package gathers
their public names.
"""

from __future__ import annotations

from v2a.cache.decoding import Decoded, DecodeRequest, DecodeSet, decode_clip, decoded_clips
from v2a.cache.encoding import FeatureEncoder
from v2a.cache.errors import CacheError, CacheMismatchError
from v2a.cache.extraction import PEER_TIMEOUT, ExtractSummary, default_device, extract
from v2a.cache.identity import (
    CACHE_FORMAT,
    cache_identity,
    cache_key,
    check_identity,
    file_digest,
    first_difference,
    manifest_fingerprint,
    sha256_of_file,
)
from v2a.cache.reader import CacheEntries, CacheEntry, CacheReader
from v2a.cache.shards import (
    DEFAULT_SHARD_SIZE,
    DTYPES,
    SHARDS,
    codes_dtype,
    read_shard_record,
    row_digest,
    shard_damage,
    shard_items,
    shard_name,
    shard_tensors,
    write_index,
    write_shard,
)
from v2a.cache.status import CacheStatus, SkipReason, cache_status

__all__ = [
    "CACHE_FORMAT", "DEFAULT_SHARD_SIZE", "DTYPES", "PEER_TIMEOUT", "SHARDS", "CacheEntries",
    "CacheEntry", "CacheError", "CacheMismatchError", "CacheReader", "CacheStatus",
    "DecodeRequest", "DecodeSet", "Decoded", "ExtractSummary", "FeatureEncoder", "SkipReason",
    "cache_identity", "cache_key", "cache_status", "check_identity", "codes_dtype", "decode_clip",
    "decoded_clips", "default_device", "extract", "file_digest", "first_difference",
    "manifest_fingerprint", "read_shard_record", "row_digest", "sha256_of_file", "shard_damage",
    "shard_items", "shard_name", "shard_tensors", "write_index", "write_shard",
]
