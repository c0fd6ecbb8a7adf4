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
``v2a extract`` and by :class:`~v2a.data.CachedClips` alike, with a sentence naming the first
difference: features of a changed encoder are never mixed with old ones, and a cache of
hundreds of gigabytes is never replaced behind the user's back. Give another ``data.cache``
folder (or delete the old one) to extract again.

Decoding runs in ``--workers`` processes (a :class:`torch.utils.data.DataLoader`); the models run
in the main process on batches of clips, on the GPU when there is one.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import gc
import hashlib
import io
import json
import math
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from v2a import __version__
from v2a.data import (
    Clip,
    ClipItem,
    ManifestError,
    Skipped,
    cache_dir_of,
    data_root,
    manifest_of,
    read_manifest,
)
from v2a.errors import UserError
from v2a.features import extraction_slots
from v2a.files import atomic_output, remove_stale_temporaries, write_text_atomic
from v2a.recipe import build_frozen
from v2a.sequences import FeatureSequence

CACHE_FORMAT = 1
DTYPES = {"float16": torch.float16, "float32": torch.float32}
DEFAULT_SHARD_SIZE = 256
SHARDS = "shards"


# A process that decoded video and then forks (DataLoader workers) must not let the child's
# garbage collector free PyAV objects inherited from the parent: PyAV 18 keeps every decoded
# frame in a reference cycle (frame <-> side data), and freeing one whose scaler ran with
# slice threads waits, in the child, on threads that exist only in the parent (a hang seen in
# forked workers). Objects alive at a fork are frozen for the child's collector (Python's own
# advice before fork, which also keeps memory shared) and unfrozen in the parent at once, unless
# the program had frozen objects itself.
_FROZE_FOR_FORK = []


def _freeze_before_fork() -> None:
    _FROZE_FOR_FORK.append(gc.get_freeze_count() == 0)
    gc.freeze()


def _unfreeze_after_fork() -> None:
    if _FROZE_FOR_FORK and _FROZE_FOR_FORK.pop():
        gc.unfreeze()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_freeze_before_fork, after_in_parent=_unfreeze_after_fork,
                        after_in_child=_FROZE_FOR_FORK.clear)


class CacheError(UserError):
    """A cache folder that cannot be used as it is (missing, unfinished, damaged)."""


class CacheMismatchError(CacheError):
    """A cache extracted with other components, options or data than those asked for."""

    exit_code = 2


# ---------------------------------------------------------------------------------------------
# What a recipe extracts, and the cache key
# ---------------------------------------------------------------------------------------------


_DIGESTS: dict[tuple, str] = {}


def sha256_of_file(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file (remembered per path, size and modification time)."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        _DIGESTS[memo] = "sha256:" + sha256_of_file(path)
    return _DIGESTS[memo]


def _fingerprint_weights(data: Any) -> Any:
    """``data`` with every local ``weights`` file replaced by the hash of its content."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            local = isinstance(value, str) and value.lower() not in ("none", "pretrained")
            if key == "weights" and local:
                path = Path(value).expanduser()
                value = file_digest(path) if path.is_file() else f"missing file {value}"
            out[key] = _fingerprint_weights(value)
        return out
    if isinstance(data, list):
        return [_fingerprint_weights(v) for v in data]
    return data


def cache_identity(recipe) -> dict[str, Any]:
    """What the cache key hashes: v2a's version, the window and the components (weights files by
    content)."""
    components = {slot: choice.as_data() for slot, choice in extraction_slots(recipe).items()}
    return {
        "format": CACHE_FORMAT,
        "v2a": __version__,
        "clip_seconds": recipe.data.clip_seconds,
        "components": _fingerprint_weights(components),
    }


def cache_key(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def first_difference(old: Any, new: Any, prefix: str = "") -> str:
    """``"codec.n_codebooks: 4 in the cache, 9 now"`` for the first key where they differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                return f"{where} is new"
            if key not in new:
                return f"{where} is gone"
            found = first_difference(old[key], new[key], where)
            if found:
                return found
        return ""
    if old != new:
        if isinstance(old, str) and old.startswith("sha256:"):
            return f"{prefix}: the weights file's content changed"
        return f"{prefix}: {json.dumps(old)} in the cache, {json.dumps(new)} now"
    return ""


def manifest_fingerprint(clips: Sequence[Clip]) -> str:
    h = hashlib.sha256()
    for clip in clips:
        h.update(json.dumps(dataclasses.astuple(clip)).encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def check_identity(cache_dir: Path, meta: dict[str, Any], identity: dict[str, Any]) -> None:
    key = cache_key(identity)
    if meta.get("key") == key:
        return
    old = meta.get("identity", {})
    what = first_difference({k: v for k, v in old.items() if k != "components"},
                            {k: v for k, v in identity.items() if k != "components"})
    what = what or first_difference(old.get("components", {}), identity["components"])
    raise CacheMismatchError(
        f"the cache in {cache_dir} was extracted with other components or options "
        f"({what or 'its key differs'}); give another data.cache folder to extract a new one, "
        "or delete this one"
    )


# ---------------------------------------------------------------------------------------------
# Decoding (in worker processes)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeRequest:
    """What to decode from each clip: audio at ``(sample_rate, channels)`` pairs and video at
    ``(fps, frame_size)`` pairs, over a window of ``window`` seconds."""

    window: float
    audio: tuple[tuple[int, int], ...]
    video: tuple[tuple[float, tuple[int, int] | None], ...]


@dataclass
class Decoded:
    """One clip's media: ``audio[(sr, c)]``: ``[c, n]`` float32; ``video[(fps, size)]``:
    ``(frames [t, 3, h, w] uint8, times [t] float64 s from the window's start)``."""

    clip: Clip
    audio: dict[tuple[int, int], Tensor]
    video: dict[tuple, tuple[Tensor, Tensor]]


def decode_clip(clip: Clip, root: Path | None, request: DecodeRequest) -> Decoded | Skipped:
    """Decode what ``request`` asks for from ``clip``, or say why the clip cannot be used.

    Bad media (missing, empty, truncated, not a video, no video stream, no audio, shorter than
    the window) and any other failure of the decoder become :class:`~v2a.data.Skipped`, so that
    one bad file never stops a run over thousands.
    """
    from v2a.media import MediaError, load_audio, load_video

    path = clip.resolve(root)
    window = request.window
    if clip.duration is not None and clip.duration < window - 1e-6:
        return Skipped(clip, f"{path}: the manifest gives the clip {clip.duration:g} s, shorter "
                             f"than the window of {window:g} s")
    try:
        audio = {
            (sr, ch): load_audio(path, sample_rate=sr, channels=ch, start=clip.start,
                                 duration=window)
            for sr, ch in request.audio
        }
        video = {}
        for fps, size in request.video:
            decoded = load_video(path, fps=fps, size=size, start=clip.start, duration=window)
            frames = decoded.frames.mul(255).round_().to(torch.uint8)  # lossless: they were bytes
            video[(fps, size)] = (frames, decoded.times - clip.start)
    except MediaError as exc:
        return Skipped(clip, str(exc))
    except Exception as exc:  # a decoder failure nobody foresaw: skip the clip, say what it was
        return Skipped(clip, f"{path}: decoding failed ({type(exc).__name__}: {exc})")
    return Decoded(clip, audio, video)


class DecodeSet(torch.utils.data.Dataset):
    """Clips → :class:`Decoded` (or :class:`Skipped`), for a DataLoader's worker processes."""

    def __init__(self, clips: Sequence[Clip], root: Path | None, request: DecodeRequest):
        self.clips, self.root, self.request = list(clips), root, request

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Decoded | Skipped:
        return decode_clip(self.clips[index], self.root, self.request)


def _as_is(item):
    return item


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)


def decoded_clips(clips: Sequence[Clip], root: Path | None, request: DecodeRequest,
                  workers: int) -> Iterator[Decoded | Skipped]:
    """Decode ``clips`` in order, in ``workers`` processes (0: in this one)."""
    if not clips:
        return iter(())
    loader = torch.utils.data.DataLoader(
        DecodeSet(clips, root, request), batch_size=None, shuffle=False, num_workers=workers,
        collate_fn=_as_is, worker_init_fn=_one_thread if workers else None,
        prefetch_factor=4 if workers else None,
    )
    return iter(loader)


# ---------------------------------------------------------------------------------------------
# Encoding (in the main process, batched)
# ---------------------------------------------------------------------------------------------




def _groups(keys: list) -> list[list[int]]:
    """Indices grouped by equal key, in order of first appearance."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


class FeatureEncoder:
    """The recipe's codec, visual encoders and audio encoder, frozen, on ``device``.

    ``request`` says what :func:`decode_clip` must decode for them; :meth:`encode` turns decoded
    clips into :class:`~v2a.data.ClipItem`\\ s, one batch per call.
    """

    def __init__(self, recipe, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.window = float(recipe.data.clip_seconds)
        slots = extraction_slots(recipe)
        if not slots:
            raise UserError(
                f"{recipe.source} has no codec, visual encoder or audio encoder to extract"
            )
        built = {slot: build_frozen(choice).to(self.device) for slot, choice in slots.items()}
        self.codec = built.get("codec")
        self.audio_encoder = built.get("audio_encoder")
        self.streams = {slot.split(".", 1)[1]: enc for slot, enc in built.items()
                        if slot.startswith("visual_encoders.")}
        audio, video = [], []
        if self.codec is not None:
            self.codec_audio = (int(self.codec.sample_rate), int(self.codec.channels))
            audio.append(self.codec_audio)
        if self.audio_encoder is not None:
            self.encoder_audio = (int(self.audio_encoder.sample_rate), 1)  # the mono mix
            audio.append(self.encoder_audio)
        self.stream_video = {}
        for name, enc in self.streams.items():
            size = tuple(int(s) for s in enc.frame_size) if enc.frame_size is not None else None
            self.stream_video[name] = (float(enc.fps), size)
            video.append(self.stream_video[name])
        self.request = DecodeRequest(
            window=self.window, audio=tuple(dict.fromkeys(audio)), video=tuple(dict.fromkeys(video))
        )

    def layout(self) -> dict[str, Any]:
        """Rates and widths of what the cache holds."""
        out: dict[str, Any] = {"codec": None, "streams": {}, "audio_features": None}
        if self.codec is not None:
            c = self.codec
            out["codec"] = {
                "frame_rate": float(c.frame_rate), "n_codebooks": int(c.n_codebooks),
                "codebook_size": int(c.codebook_size), "sample_rate": int(c.sample_rate),
                "frames": int(c.num_frames(round(self.window * c.sample_rate))),
            }
        for name, enc in self.streams.items():
            out["streams"][name] = {"rate": float(enc.rate), "dim": int(enc.dim),
                                    "fps": float(enc.fps)}
        if self.audio_encoder is not None:
            a = self.audio_encoder
            out["audio_features"] = {"rate": float(a.rate), "dim": int(a.dim),
                                     "sample_rate": int(a.sample_rate)}
        return out

    @torch.inference_mode()
    def encode(self, decoded: Sequence[Decoded]) -> list[ClipItem]:
        """Decoded clips → items (values float32 on the CPU), one forward pass per component
        for the whole batch (clips whose frame times or sizes differ are passed separately)."""
        n = len(decoded)
        codes: list[Tensor | None] = [None] * n
        if self.codec is not None:
            wav = torch.stack([d.audio[self.codec_audio] for d in decoded]).to(self.device)
            out = self.codec.encode(wav).cpu()  # [b, k, l]
            codes = list(out)
        streams: list[dict[str, FeatureSequence]] = [{} for _ in range(n)]
        for name, enc in self.streams.items():
            key = self.stream_video[name]
            keys = [(tuple(d.video[key][0].shape), tuple(d.video[key][1].tolist()))
                    for d in decoded]
            for group in _groups(keys):
                frames = torch.stack([decoded[i].video[key][0] for i in group]).to(self.device)
                frames = frames.float().div_(255.0)  # [b, t, 3, h, w]
                seq = enc.encode(frames, decoded[group[0]].video[key][1])
                for row, i in enumerate(group):
                    streams[i][name] = _row(seq, row)
        audio: list[FeatureSequence | None] = [None] * n
        if self.audio_encoder is not None:
            wav = torch.stack([d.audio[self.encoder_audio] for d in decoded]).to(self.device)
            seq = self.audio_encoder.encode(wav)
            audio = [_row(seq, row) for row in range(n)]
        frame_rate = float(self.codec.frame_rate) if self.codec is not None else None
        return [ClipItem(clip=d.clip, codes=codes[i], streams=streams[i], audio_features=audio[i],
                         frame_rate=frame_rate) for i, d in enumerate(decoded)]


def _row(seq: FeatureSequence, row: int) -> FeatureSequence:
    """Row ``row`` of a batch as ``[1, t, d]`` float32 on the CPU, trimmed to its real steps."""
    values = seq.values[row : row + 1].float().cpu()
    if seq.mask is not None:
        values = values[:, : int(seq.mask[row].sum())]
    return FeatureSequence(values=values.contiguous(), rate=float(seq.rate), start=float(seq.start))


# ---------------------------------------------------------------------------------------------
# Writing shards
# ---------------------------------------------------------------------------------------------


def _clip_data(clip: Clip) -> dict[str, Any]:
    return dataclasses.asdict(clip)


def _clip_from(data: dict[str, Any]) -> Clip:
    return Clip(**data)


def shard_name(index: int) -> str:
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
            skipped.append({"clip": _clip_data(item.clip), "reason": item.reason})
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
            skipped.append({"clip": _clip_data(item.clip), "reason": (
                f"{item.clip.path}: its {what} features are not finite in {dtype_name(dtype)} "
                "(NaN or too large; --dtype float32 keeps large values)")})
            continue
        entry = {k: v.contiguous() for k, v in entry.items()}
        tensors.update(entry)
        record = {"clip": _clip_data(item.clip), "row": row,
                  "starts": {name: seq.start for name, seq in item.streams.items()},
                  "sha256": row_digest(entry)}
        if item.audio_features is not None:
            record["audio_start"] = item.audio_features.start
        clips.append(record)
    return tensors, clips, skipped


def dtype_name(dtype: torch.dtype) -> str:
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
    shards = [{"shard": i, "file": r["file"], "clips": len(r["clips"]),
               "skipped": len(r["skipped"])} for i, r in sorted(records.items())]
    index = {
        "key": key, "complete": len(records) == total, "total_shards": total,
        "clips": sum(s["clips"] for s in shards), "skipped": sum(s["skipped"] for s in shards),
        "shards": shards,
    }
    write_text_atomic(cache_dir / "index.json", json.dumps(index, indent=1) + "\n")


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(f"{path} does not exist; {what}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheError(
            f"{path} cannot be read ({exc}); delete the cache folder and extract again"
        ) from None


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


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
    return "cuda" if torch.cuda.is_available() else "cpu"


def extract(
    recipe,
    *,
    workers: int | None = None,
    batch_size: int = 8,
    shard_size: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    progress: bool = True,
    verify: bool = False,
) -> ExtractSummary:
    """Extract the cache of ``recipe`` (``data.manifest``, ``data.root``, ``data.cache``),
    continuing an unfinished one and redoing damaged shards. See the module's docstring for the
    layout and guarantees.

    ``workers``: decoding processes (default ``data.num_workers``; 0 decodes in this process);
    ``batch_size``: clips per forward pass; ``shard_size``: clips per shard (default 256, then
    the cache's own); ``dtype``: ``float16`` (default) or ``float32`` for the features;
    ``verify``: check every shard's checksum too (reads the whole cache), not only its header.
    """
    started = time.perf_counter()
    manifest = manifest_of(recipe)
    root = data_root(recipe, manifest)
    cache_dir = cache_dir_of(recipe)
    clips = read_manifest(manifest)
    if not clips:
        raise ManifestError(f"the manifest {manifest} lists no clips")
    workers = recipe.data.num_workers if workers is None else workers
    if workers < 0 or batch_size < 1 or (shard_size is not None and shard_size < 1):
        raise UserError("--workers must be 0 or more, --batch-size and --shard-size 1 or more")
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"the dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")

    identity = cache_identity(recipe)
    key = cache_key(identity)
    fingerprint = manifest_fingerprint(clips)
    meta_path = cache_dir / "cache.json"
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
    else:
        meta = None
        shard_size = shard_size or DEFAULT_SHARD_SIZE
        dtype = dtype or "float16"

    total = -(-len(clips) // shard_size)
    for folder in (cache_dir, cache_dir / SHARDS):
        remove_stale_temporaries(folder)  # left by a killed run
    records, damaged = {}, []
    for i in range(total):
        record = read_shard_record(cache_dir, i, key)
        if record is None:
            continue  # never finished: extracted below
        problem = shard_damage(cache_dir, record, meta, verify=verify)
        if problem:
            damaged.append(f"{SHARDS}/{record['file']}: {problem}")
        else:
            records[i] = record
    todo = [i for i in range(total) if i not in records]

    checked = len(damaged) + sum(1 for r in records.values() if r.get("sha256")) if verify else 0
    if not todo:  # finished already: report it without building anything
        write_index(cache_dir, key, records, total)
        return _summary(cache_dir, records, total, [], [], started, verified=checked)
    encoder = FeatureEncoder(recipe, device="cpu")
    writing = _CacheWrites(recipe, cache_dir, records, total)
    with writing:
        if meta is None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            meta = {"key": key, "identity": identity, "dtype": dtype, "shard_size": shard_size,
                    "manifest": fingerprint, "clips": len(clips), "shards": total,
                    "layout": encoder.layout()}
            write_text_atomic(meta_path, json.dumps(meta, indent=1) + "\n")
        write_index(cache_dir, key, records, total)

    pending = [c for i in todo for c in clips[i * shard_size:(i + 1) * shard_size]]
    stream = decoded_clips(pending, root, encoder.request, workers)  # forks before any GPU use
    encoder_device = torch.device(device or default_device())
    if encoder_device.type != "cpu":
        for module in (encoder.codec, encoder.audio_encoder, *encoder.streams.values()):
            if module is not None:
                module.to(encoder_device)
        encoder.device = encoder_device
    torch_dtype = DTYPES[dtype]
    code_dtype = codes_dtype(encoder.codec.codebook_size if encoder.codec is not None else None)
    done_before = sum(len(r["clips"]) + len(r["skipped"]) for r in records.values())
    skipped_now = 0
    from tqdm import tqdm

    bar = tqdm(total=len(clips), initial=done_before, unit="clip", desc="extracting",
               disable=not progress, dynamic_ncols=True, smoothing=0.05)
    try:
        for index in todo:
            first = index * shard_size
            shard_clips = clips[first:first + shard_size]
            items: list[ClipItem | Skipped | None] = [None] * len(shard_clips)
            batch: list[tuple[int, Decoded]] = []

            def flush() -> None:
                for (pos, _), item in zip(batch, encoder.encode([d for _, d in batch])):
                    items[pos] = item
                batch.clear()

            for pos in range(len(shard_clips)):
                decoded = next(stream)
                if isinstance(decoded, Skipped):
                    items[pos] = decoded
                    skipped_now += 1
                    bar.set_postfix(skipped=skipped_now, refresh=False)
                else:
                    batch.append((pos, decoded))
                    if len(batch) == batch_size:
                        flush()
                bar.update(1)
            if batch:
                flush()
            with writing:
                records[index] = write_shard(cache_dir, index, key, first, items, torch_dtype,
                                             code_dtype)
                write_index(cache_dir, key, records, total)
    finally:
        bar.close()
        del stream  # stops the decoding workers

    with writing:
        return _summary(cache_dir, records, total, todo, pending, started, damaged, checked)


class _CacheWrites:
    """A context for writing into the cache: a folder that refuses a file (read-only, no
    permission, a full disk) is a :class:`CacheError` naming it, the error, what is complete and
    the command that continues."""

    def __init__(self, recipe, cache_dir: Path, records: dict[int, Any], total: int):
        self.recipe, self.cache_dir, self.records, self.total = recipe, cache_dir, records, total

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, traceback) -> None:
        if not isinstance(exc, OSError):
            return
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        once = "its disk has space again" if full else "the folder is writable"
        raise CacheError(
            f"cannot write the feature cache in {self.cache_dir} ({exc.strerror or exc}); "
            f"{len(self.records)} of {self.total} shards are complete: continue with "
            f"`{self.recipe.command_line('extract')}` once {once}"
        ) from None


def _summary(cache_dir: Path, records: dict[int, dict[str, Any]], total: int, todo: list[int],
             pending: list[Clip], started: float, damaged: Sequence[str] = (),
             verified: int = 0) -> ExtractSummary:
    skipped = [Skipped(_clip_from(s["clip"]), s["reason"]) for _, r in sorted(records.items())
               for s in r["skipped"]]
    write_text_atomic(cache_dir / "skipped.tsv", _skipped_tsv(skipped))
    return ExtractSummary(
        cache_dir=cache_dir, clips=sum(len(r["clips"]) for r in records.values()), skipped=skipped,
        shards=total, shards_done_now=len(todo), clips_done_now=len(pending),
        seconds=time.perf_counter() - started, bytes=sum(r["bytes"] for r in records.values()),
        damaged=list(damaged), verified=verified,
    )


def _skipped_tsv(skipped: Sequence[Skipped]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["id", "path", "reason"])
    for s in skipped:
        writer.writerow([s.clip.id, s.clip.path, s.reason])
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


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

    def __init__(self, cache_dir: str | Path, recipe, *, allow_partial: bool = False,
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
                    clip=_clip_from(c["clip"]), file=record["file"], row=c["row"],
                    starts=tuple(c["starts"].items()), audio_start=c.get("audio_start"),
                    names=tuple(rows[c["row"]]), sha256=c.get("sha256")))
            self.skipped += [Skipped(_clip_from(s["clip"]), s["reason"]) for s in record["skipped"]]
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


# ---------------------------------------------------------------------------------------------
# `v2a extract`
# ---------------------------------------------------------------------------------------------
