"""A dataset of VGGSound's size (200,000 clips): the manifest reads back, the feature cache opens
with the right entries, and the cache's index costs no Python object per clip, so that forked
DataLoader workers share it instead of each copying it (see tests/scale_fixtures.py for the
synthetic manifest and cache; no media)."""

from __future__ import annotations

import gc
import importlib.util
import json
import pickle
import sys
import types
from pathlib import Path

import pytest

from tests.scale_fixtures import SHARD_SIZE, scale_recipe, synthetic_clips, write_synthetic_cache
from v2a.cache import SHARDS, CacheEntry, CacheReader, read_shard_record, shard_tensors
from v2a.cache.shards import clip_from_record
from v2a.datasets import CachedClips
from v2a.manifests import Clip, read_manifest, write_manifest

ROOT = Path(__file__).resolve().parents[1]
CLIPS = 200_000
SKIP_EVERY = 64


@pytest.fixture(scope="module")
def scale(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    clips = synthetic_clips(CLIPS)
    manifest = write_manifest(clips, root / "manifest.csv")
    recipe = scale_recipe(root, manifest, root / "cache")
    records = write_synthetic_cache(root / "cache", recipe, clips, skip_every=SKIP_EVERY,
                                    exact_format=False)
    data = CachedClips(None, recipe, split="train")
    return types.SimpleNamespace(root=root, clips=clips, manifest=manifest, recipe=recipe,
                                 records=records, data=data)


def expected_entry(records: dict, meta: dict, position: int) -> CacheEntry:
    """The entry of the ``position``-th clip of the cache, from the shard records written."""
    for index in sorted(records):
        record = records[index]
        if position < len(record["clips"]):
            c = record["clips"][position]
            return CacheEntry(
                clip=clip_from_record(c["clip"]), file=record["file"], row=c["row"],
                starts=tuple(c["starts"].items()), audio_start=c.get("audio_start"),
                names=tuple(shard_tensors(record, meta)[c["row"]]), sha256=c.get("sha256"))
        position -= len(record["clips"])
    raise IndexError(position)


def python_objects(root, *, leave_out=()) -> int:
    """How many Python objects ``root`` holds: those reachable from it by
    :func:`gc.get_referents`, but for code (modules, classes, functions) and what is reachable
    only through ``leave_out``."""
    code = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen = {id(x) for x in leave_out}
    stack, count = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, code):
            continue
        seen.add(id(obj))
        count += 1
        stack.extend(gc.get_referents(obj))
    return count


def test_a_manifest_of_200k_clips_reads_back(scale):
    clips = read_manifest(scale.manifest)
    assert len(clips) == CLIPS
    assert clips == scale.clips
    assert sum(c.in_split("test") for c in clips) == CLIPS // 10


def test_the_cache_of_200k_clips_opens_with_every_entry(scale):
    reader = scale.data.reader
    kept = [c for i, c in enumerate(scale.clips) if i % SKIP_EVERY != SKIP_EVERY - 1]
    skipped = [c for i, c in enumerate(scale.clips) if i % SKIP_EVERY == SKIP_EVERY - 1]
    assert len(reader.entries) == len(kept)
    assert [s.clip for s in reader.skipped] == skipped
    assert reader.skipped[-1].reason == f"{skipped[-1].path}: the file has no audio track"
    for position in (0, 1, len(kept) // 2, len(kept) - 1):
        assert reader.entries[position] == expected_entry(scale.records, reader.meta, position)
        assert reader.entries[position].clip == kept[position]
    assert reader.entries[-1] == reader.entries[len(kept) - 1]
    train = [c for c in kept if c.split == "train"]
    assert len(scale.data) == len(train)
    assert [scale.data.entries[i].clip for i in (0, len(train) // 2, len(train) - 1)] == [
        train[0], train[len(train) // 2], train[-1]]
    last = scale.data[len(train) - 1]  # read: its tensors match their checksum
    assert last.clip == train[-1] and last.codes.shape == (2, 8)


def test_the_cache_index_holds_no_python_object_per_clip(scale):
    """Opening the cache holds a few objects per shard (its file's name) and per row of a shard
    (its tensor names), and one per skipped clip, never one per clip: the forked DataLoader
    workers then never write to the pages of the index (reference counts, the garbage
    collector's pass), which stay shared."""
    data = scale.data
    shards = len(scale.records)
    tensors_per_row = len(data.reader.entries[0].names)
    # a file name per shard; a tuple of names per row of a shard, and its names; a little more
    # for the recipe's cache.json (its layout and identity) and the reader's few attributes
    bound = 2 * shards + SHARD_SIZE * (1 + tensors_per_row) + 1000
    assert python_objects(data, leave_out=[data.reader.skipped]) < bound
    # pickled (spawned workers): the clip's strings and a few 8-byte numbers, offsets and codes
    # per clip, nothing like a pickled object per clip (~300 bytes here)
    entry = data.reader.entries[0]
    text = sum(len(s) for s in (entry.clip.path, entry.clip.id, entry.clip.label, entry.sha256))
    numbers = 4 + len(entry.starts) + 12  # start, duration, audio start, row, the starts; offsets
    per_clip = len(pickle.dumps(data)) / len(data.reader.entries)
    assert per_clip < text + 8 * numbers


def test_entries_keep_every_value_of_their_records(tmp_path):
    """Every field of every entry as the shard's JSON gives it, the optional ones too (no label,
    split or duration; a shard written before checksums and without audio starts), and the
    sequence's indexing, slicing and splits."""
    clips = [Clip(path=f"vidéo {i}.mp4" if i % 9 else f"undecodable \udce9 {i}.mp4",
                  start=0.5 * (i % 3), duration=None if i % 2 else 4.25,
                  label=None if i % 5 else "chien qui aboie", split=(None, "val", "train")[i % 3],
                  id=f"clip #{i}" if i % 4 == 0 else "")
             for i in range(2 * SHARD_SIZE + 10)]
    recipe = scale_recipe(tmp_path, tmp_path / "manifest.csv", tmp_path / "cache")
    write_synthetic_cache(tmp_path / "cache", recipe, clips, skip_every=7, exact_format=False)
    shard = tmp_path / "cache" / SHARDS / "000001.json"
    old = json.loads(shard.read_text())
    for c in old["clips"]:
        del c["sha256"], c["audio_start"]
    shard.write_text(json.dumps(old))
    reader = CacheReader(tmp_path / "cache", recipe)
    records = {i: read_shard_record(tmp_path / "cache", i, reader.key) for i in range(3)}
    expected = [expected_entry(records, reader.meta, i) for i in range(len(reader.entries))]
    assert list(reader.entries) == expected
    assert [reader.entries[i] for i in range(-3, 0)] == expected[-3:]
    assert list(reader.entries[5:300:7]) == expected[5:300:7]
    assert any(e.sha256 is None and e.audio_start is None for e in expected)
    assert any(e.clip.label is None and e.clip.duration is None for e in expected)
    assert list(reader.entries.in_split(None)) == expected
    for split in ("train", "val", "test"):
        assert list(reader.entries.in_split(split)) == [e for e in expected
                                                        if e.clip.in_split(split)]
    data = CachedClips(tmp_path / "cache", recipe, split="train")
    assert data.clips == [e.clip for e in expected if e.clip.in_split("train")]
    with pytest.raises(IndexError):
        reader.entries[len(expected)]


def test_the_scale_benchmark_runs(capsys):
    """benchmarks/bench_scale.py at a tiny size, so that the script cannot rot (not timed)."""
    path = ROOT / "benchmarks" / "bench_scale.py"
    spec = importlib.util.spec_from_file_location("bench_scale", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = bench  # its worker processes find its functions
    spec.loader.exec_module(bench)
    out = bench.main(["--clips", "2000", "--items", "40", "--workers", "0,1", "--repeat", "1"])
    printed = capsys.readouterr().out
    assert "CacheReader" in printed and "USS objects / columns" in printed
    assert out["entries"] == 2000 - 2000 // 64 and out["train_clips"] < out["entries"]
    for layout in ("columns", "objects"):
        assert set(out["memory"][layout]) == {0, 1}
        assert out["memory"][layout][1]["worker_uss"] > 0
    assert out["pickled_bytes"] < out["pickled_objects_bytes"]
