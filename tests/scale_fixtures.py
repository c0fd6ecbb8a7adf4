"""A dataset of VGGSound's size without any media, for tests/test_scale.py and
benchmarks/bench_scale.py: a manifest of ``n`` clips and a feature cache of them.

The cache is a real one (``cache.json`` with the recipe's key and layout, one JSON record and one
safetensors file per shard, ``index.json``), written with the project's shard writer, except that
every full shard holds the same tiny tensors: shard 0 is written by
:func:`~v2a.cache.write_shard`, and every other full shard gets a hard link to (or a copy of) its
tensor file and the same JSON record with its own clips. Writing 200,000 clips this way takes
seconds instead of the minutes hashing each clip's tensors would. One clip in every
``skip_every`` is a clip extraction skipped, with a reason, as in a real dataset.

``exact_format=False`` writes the JSON records compact (``v2a extract`` indents them) and no
manifest fingerprint: what :class:`~v2a.cache.CacheReader` reads is the same, written several
times faster (for the test; the benchmark measures the real format).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch

from v2a.cache import (
    SHARDS,
    FeatureEncoder,
    cache_identity,
    cache_key,
    manifest_fingerprint,
    shard_name,
    write_index,
    write_shard,
)
from v2a.files import write_text_atomic
from v2a.items import ClipItem, Skipped
from v2a.manifests import Clip
from v2a.recipe import Recipe, load_recipe
from v2a.sequences import FeatureSequence

#: Tiny real components, so that the cache's key and layout are those v2a extract would write.
SCALE_RECIPE = """\
name: scale
codec: {plugin: spectral_rvq, sample_rate: 8000, n_fft: 256, hop_length: 128, n_codebooks: 2,
        codebook_size: 16}
visual_encoders:
  motion: {plugin: colour_motion, fps: 4.0, grid: 2, size: 16, orientations: 2}
audio_encoder: {plugin: mel, sample_rate: 8000, n_fft: 256, hop_length: 128, n_mels: 8}
data: {clip_seconds: 1.0, num_workers: 0}
"""
SHARD_SIZE = 256
CLIP_FIELDS = tuple(f.name for f in dataclasses.fields(Clip))
LABELS = 309  # VGGSound's classes
SPLITS = ("train",) * 9 + ("test",)


def scale_recipe(folder: Path, manifest: Path, cache: Path) -> Recipe:
    """The recipe of the synthetic dataset (written to ``folder/recipe.yaml``)."""
    path = folder / "recipe.yaml"
    path.write_text(SCALE_RECIPE)
    return load_recipe(path, [f"data.manifest={manifest}", f"data.cache={cache}"])


def synthetic_clips(n: int) -> list[Clip]:
    """``n`` clips named like VGGSound's (``<video>_<start ms>_<end ms>.mp4``), with a label
    each and one in ten in the ``test`` split; every seventh one starts at 2 s of its file."""
    clips = []
    for i in range(n):
        start = 2.0 if i % 7 == 0 else 0.0
        ms = int(start * 1000)
        clips.append(Clip(path=f"v{i:07d}-Ab_{ms}_{ms + 10000}.mp4", start=start, duration=10.0,
                          label=f"sound class {i % LABELS}", split=SPLITS[i % len(SPLITS)]))
    return clips


def _items(clips: list[Clip], layout: dict, skip_every: int) -> list[ClipItem | Skipped]:
    """Tiny tensors of the layout's widths for each clip (row ``r`` filled with ``r``); clip
    ``i`` is skipped when ``i % skip_every == skip_every - 1``."""
    codec, audio = layout["codec"], layout["audio_features"]
    items: list[ClipItem | Skipped] = []
    for i, clip in enumerate(clips):
        if i % skip_every == skip_every - 1:
            items.append(Skipped(clip, f"{clip.path}: the file has no audio track"))
            continue
        fill = float(len(items) % 100)
        streams = {name: FeatureSequence(values=torch.full((1, 4, s["dim"]), fill), rate=s["rate"],
                                         start=0.25)
                   for name, s in layout["streams"].items()}
        items.append(ClipItem(
            clip=clip, codes=torch.full((codec["n_codebooks"], 8), i % codec["codebook_size"]),
            streams=streams, frame_rate=codec["frame_rate"],
            audio_features=FeatureSequence(values=torch.full((1, 4, audio["dim"]), fill),
                                           rate=audio["rate"]),
        ))
    return items


def write_synthetic_cache(cache_dir: Path, recipe: Recipe, clips: list[Clip], *,
                          skip_every: int = 64, exact_format: bool = True) -> dict[int, dict]:
    """A complete feature cache of ``clips`` for ``recipe`` in ``cache_dir`` (see the module's
    docstring); returns the shard records by index."""
    layout = FeatureEncoder(recipe).layout()
    identity = cache_identity(recipe)
    key = cache_key(identity)
    total = -(-len(clips) // SHARD_SIZE)
    fingerprint = manifest_fingerprint(clips) if exact_format else "not computed"
    meta = {"key": key, "identity": identity, "dtype": "float16", "shard_size": SHARD_SIZE,
            "manifest": fingerprint, "clips": len(clips), "shards": total, "layout": layout}
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cache_dir / "cache.json", json.dumps(meta, indent=1) + "\n")
    codes_dtype = torch.int16
    first_shard = clips[:SHARD_SIZE]
    template = write_shard(cache_dir, 0, key, 0, _items(first_shard, layout, skip_every),
                           torch.float16, codes_dtype)
    records = {0: template}
    full_shards = len(clips) // SHARD_SIZE
    for index in range(1, total):
        first = index * SHARD_SIZE
        mine = clips[first:first + SHARD_SIZE]
        if index >= full_shards:  # the last, shorter shard: its own tensors
            records[index] = write_shard(cache_dir, index, key, first,
                                         _items(mine, layout, skip_every), torch.float16,
                                         codes_dtype)
            continue
        records[index] = _copy_of_first_shard(cache_dir, template, index, mine, skip_every,
                                              indent=1 if exact_format else None)
    write_index(cache_dir, key, records, total)
    return records


def _copy_of_first_shard(cache_dir: Path, template: dict, index: int, clips: list[Clip],
                         skip_every: int, indent: int | None) -> dict:
    """Shard ``index`` holding shard 0's tensors for ``clips``: its tensor file linked (or
    copied) from shard 0's, and shard 0's record with these clips."""
    name = shard_name(index)
    folder = cache_dir / SHARDS
    target = folder / f"{name}.safetensors"
    try:
        os.link(folder / template["file"], target)
    except OSError:
        shutil.copyfile(folder / template["file"], target)
    kept = [c for i, c in enumerate(clips) if i % skip_every != skip_every - 1]
    dropped = [c for i, c in enumerate(clips) if i % skip_every == skip_every - 1]
    record = dict(template, shard=index, first=index * SHARD_SIZE, file=target.name)
    record["clips"] = [dict(row, clip=_record_of(clip))
                       for row, clip in zip(template["clips"], kept)]
    record["skipped"] = [dict(skip, clip=_record_of(clip), reason=f"{clip.path}: the file has no "
                              "audio track") for skip, clip in zip(template["skipped"], dropped)]
    write_text_atomic(folder / f"{name}.json", json.dumps(record, indent=indent) + "\n")
    return record


def _record_of(clip: Clip) -> dict:
    """The clip as a shard's JSON holds it (what :func:`v2a.cache.shards.clip_record` gives,
    without the deep copy of :func:`dataclasses.asdict`, 10x slower)."""
    return {name: getattr(clip, name) for name in CLIP_FIELDS}
