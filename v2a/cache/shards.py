"""The cache's file format: shards, their records and checks, the index (see :mod:`v2a.cache`
for the layout).

Shard ``i`` holds the manifest's clips ``[i * shard_size, (i + 1) * shard_size)``: a
safetensors file of their tensors and a JSON record of its clips and skips, written after the
tensors (so that it marks the shard complete), each through :func:`v2a.files.atomic_output`.
:func:`shard_damage` says why a complete shard's tensors cannot be trusted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from v2a.cache.errors import CacheError
from v2a.cache.identity import sha256_of_file
from v2a.files import atomic_output, write_text_atomic
from v2a.items import ClipItem, Skipped
from v2a.manifests import Clip

DTYPES = {"float16": torch.float16, "float32": torch.float32}
DEFAULT_SHARD_SIZE = 256
SHARDS = "shards"


def clip_record(clip: Clip) -> dict[str, Any]:
    """A clip as a shard's JSON holds it: every field (a caption only when set,
    :meth:`Clip.record`)."""
    return clip.record()


def clip_from_record(data: dict[str, Any]) -> Clip:
    """The clip a shard's JSON holds (:func:`clip_record`)."""
    return Clip(**data)


def shard_name(index: int) -> str:
    """The file name of shard ``index`` without its suffix: six digits."""
    return f"{index:06d}"


def codes_dtype(codebook_size: int | None) -> torch.dtype:
    """The integer type codes are stored as: int16 when every entry fits."""
    return torch.int16 if codebook_size is not None and codebook_size <= 2**15 else torch.int32


def shard_items(items: Sequence[ClipItem | Skipped], dtype: torch.dtype, code_dtype: torch.dtype
                ) -> tuple[dict[str, Tensor], list[dict[str, Any]], list[dict[str, Any]]]:
    """A shard's tensors, clip records and skip records. A clip whose features are not finite
    in ``dtype`` (NaN from an encoder, or beyond float16's range) is skipped too."""
    tensors: dict[str, Tensor] = {}
    clips, skipped = [], []
    for item in items:
        if isinstance(item, Skipped):
            skipped.append({"clip": clip_record(item.clip), "reason": item.reason})
            continue
        row = len(clips)
        entry: dict[str, Tensor] = {}
        if item.codes is not None:
            entry[f"{row}.codes"] = item.codes.to(code_dtype)
        for name, seq in item.streams.items():
            entry[f"{row}.stream.{name}"] = seq.values[0].to(dtype)
        if item.audio_features is not None:
            entry[f"{row}.audio"] = item.audio_features.values[0].to(dtype)
        bad = [k for k, v in entry.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            what = bad[0].split(".", 1)[1]
            skipped.append({"clip": clip_record(item.clip), "reason": (
                f"{item.clip.path}: its {what} features are not finite in {dtype_name(dtype)} "
                "(NaN or too large; --dtype float32 keeps large values)")})
            continue
        entry = {k: v.contiguous() for k, v in entry.items()}
        tensors.update(entry)
        record = {"clip": clip_record(item.clip), "row": row,
                  "starts": {name: seq.start for name, seq in item.streams.items()},
                  "sha256": row_digest(entry)}
        if item.audio_features is not None:
            record["audio_start"] = item.audio_features.start
        clips.append(record)
    return tensors, clips, skipped


def dtype_name(dtype: torch.dtype) -> str:
    """The name of a feature dtype in :data:`DTYPES` (``float16``)."""
    return next(k for k, v in DTYPES.items() if v == dtype)


def row_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 (hex) of one clip's tensors as the shard stores them: names, dtypes, shapes and
    bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def write_shard(cache_dir: Path, index: int, key: str, first: int,
                items: Sequence[ClipItem | Skipped], dtype: torch.dtype,
                code_dtype: torch.dtype = torch.int32) -> dict[str, Any]:
    """Write shard ``index`` (tensors, then its JSON, each atomically); returns the JSON."""
    from safetensors.torch import save

    folder = cache_dir / SHARDS
    folder.mkdir(parents=True, exist_ok=True)
    tensors, clips, skipped = shard_items(items, dtype, code_dtype)
    name = shard_name(index)
    record: dict[str, Any] = {"shard": index, "key": key, "first": first, "file": None, "bytes": 0,
                              "clips": clips, "skipped": skipped}
    if tensors:
        file = folder / f"{name}.safetensors"
        data = save(tensors, metadata={"key": key})  # one entry: a stable header
        with atomic_output(file) as tmp:
            Path(tmp).write_bytes(data)
        record.update(file=file.name, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    write_text_atomic(folder / f"{name}.json", json.dumps(record, indent=1) + "\n")
    return record


def read_shard_record(cache_dir: Path, index: int, key: str) -> dict[str, Any] | None:
    """The JSON of shard ``index`` if it was written for ``key`` (the shard is complete: its
    tensors were renamed into place before it), else None. See :func:`shard_damage` for whether
    the tensors can still be trusted."""
    path = cache_dir / SHARDS / f"{shard_name(index)}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or record.get("shard") != index:
        return None
    return record


_SAFETENSORS_DTYPES = {torch.int16: "I16", torch.int32: "I32", torch.float16: "F16",
                       torch.float32: "F32"}
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4,
                "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def shard_tensors(record: dict[str, Any], meta: dict[str, Any]) -> dict[int, dict[str, tuple]]:
    """What each row of a shard holds, from its JSON and the cache's ``cache.json``: row ->
    {tensor name: (safetensors dtype, axis, its size)}, the axis being the codebooks of the
    codes and the width of the features."""
    layout, codec = meta["layout"], meta["layout"]["codec"]
    features = _SAFETENSORS_DTYPES[DTYPES[meta["dtype"]]]
    rows = {}
    for clip in record["clips"]:
        row, tensors = clip["row"], {}
        if codec:
            dtype = _SAFETENSORS_DTYPES[codes_dtype(codec["codebook_size"])]
            tensors[f"{row}.codes"] = (dtype, 0, codec["n_codebooks"])
        for stream in clip["starts"]:
            dim = layout["streams"].get(stream, {}).get("dim")  # None: a stream the cache lacks
            tensors[f"{row}.stream.{stream}"] = (features, -1, dim)
        if layout["audio_features"]:
            tensors[f"{row}.audio"] = (features, -1, layout["audio_features"]["dim"])
        rows[row] = tensors
    return rows


def _header_damage(path: Path, size: int, record: dict[str, Any],
                   meta: dict[str, Any] | None) -> str | None:
    """What is wrong with a shard file's safetensors header, or None: its dtypes, shapes and
    offsets must tile the file exactly and, given the cache's ``meta``, list the tensors the
    shard's JSON implies, of the cache's dtypes and widths."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else size
            if length > size - 8:
                return "its header is corrupted (its length exceeds the file)"
            text = f.read(length)
    except OSError as exc:
        return f"its tensor file cannot be read ({exc.strerror or exc})"
    try:
        header = json.loads(text)
        metadata = header.pop("__metadata__", None) or {}
        spans = sorted((tuple(int(i) for i in info["data_offsets"]), name, info["dtype"],
                        [int(n) for n in info["shape"]]) for name, info in header.items())
    except (ValueError, UnicodeDecodeError, AttributeError, KeyError, TypeError):
        spans = None
    if spans is None or any(len(offsets) != 2 for offsets, *_ in spans):
        return "its header is corrupted (it is not the JSON safetensors writes)"
    if metadata.get("key") != record["key"]:
        return "its header names another cache key"
    expected = None
    if meta is not None:
        expected = {n: spec for row in shard_tensors(record, meta).values() for n, spec in row.items()}
        if set(header) != set(expected):
            return "its header lists other tensors than its JSON"
    end = 0
    for (first, last), name, dtype, shape in spans:
        width = _DTYPE_BYTES.get(dtype)
        fits = width is not None and first == end and last - first == width * math.prod(shape)
        if fits and expected is not None:
            want, axis, extent = expected[name]
            fits = dtype == want and len(shape) == 2 and shape[axis] == extent
        if not fits:
            return f"its header is corrupted (at tensor {name!r})"
        end = last
    if 8 + length + end != size:
        return "its header is corrupted (its tensors do not fill the file)"
    return None


def shard_damage(cache_dir: Path, record: dict[str, Any], meta: dict[str, Any] | None = None,
                 *, verify: bool = False) -> str | None:
    """Why the tensors of a complete shard (its JSON ``record``) cannot be trusted, or None.

    Cheap checks always: the tensor file exists with the recorded size, and its header fits the
    record (given the cache's ``cache.json`` as ``meta``: the tensor names, dtypes and widths
    too). With ``verify``: the SHA-256 of the whole file against the recorded one (reads it)."""
    if not record.get("file"):
        return None  # every clip of the shard was skipped: no tensors
    path = cache_dir / SHARDS / record["file"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "its tensor file is missing"
    if size != record.get("bytes"):
        return f"its tensor file has {size} bytes, not the {record.get('bytes')} written"
    problem = _header_damage(path, size, record, meta)
    if problem is None and verify and record.get("sha256") and (
            sha256_of_file(path) != record["sha256"]):
        problem = "its bytes changed since extraction (the checksum differs)"
    return problem


def write_index(cache_dir: Path, key: str, records: dict[int, dict[str, Any]], total: int) -> None:
    """Write ``index.json`` (atomically): the complete shards (``records`` by index) with their
    clip and skip counts, and whether all ``total`` shards are complete."""
    shards = [{"shard": i, "file": r["file"], "clips": len(r["clips"]),
               "skipped": len(r["skipped"])} for i, r in sorted(records.items())]
    index = {
        "key": key, "complete": len(records) == total, "total_shards": total,
        "clips": sum(s["clips"] for s in shards), "skipped": sum(s["skipped"] for s in shards),
        "shards": shards,
    }
    write_text_atomic(cache_dir / "index.json", json.dumps(index, indent=1) + "\n")


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A cache's JSON file; a missing one is a :class:`CacheError` ending in ``what`` (what to
    do), an unreadable one a :class:`CacheError` saying to extract again."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(f"{path} does not exist; {what}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheError(
            f"{path} cannot be read ({exc}); delete the cache folder and extract again"
        ) from None


def skipped_tsv(skipped: Sequence[Skipped]) -> str:
    """The text of ``skipped.tsv``: a header, then each skipped clip's id, path and reason."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["id", "path", "reason"])
    for s in skipped:
        writer.writerow([s.clip.id, s.clip.path, s.reason])
    return buffer.getvalue()
