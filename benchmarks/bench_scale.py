"""Workload S1: a dataset of VGGSound's size (200,000 clips), from its manifest to the workers.

The data are synthetic (tests/scale_fixtures.py, no media): a manifest of ``--clips`` clips
(VGGSound-like names, 309 labels, one in ten in ``test``) and a complete feature cache of them
in the format ``v2a extract`` writes (shards of 256 clips, one in 64 skipped, tiny tensors: the
index is what is measured, not the tensors). Figures, each with a reference measured in the
same run:

* seconds to read the manifest (:func:`v2a.manifests.read_manifest`), against parsing the same
  file with :mod:`csv` alone;
* seconds to open the cache (:class:`v2a.cache.CacheReader`, which checks every shard's header,
  and :class:`v2a.datasets.CachedClips` of the ``train`` split), against ``json.load`` of the
  JSON files the index is made of;
* the index's size on disk (``cache.json``, ``index.json``, the shards' JSON records) and
  pickled (what a spawned worker receives);
* the memory of each DataLoader worker (0, 1, 2 and 4 workers) after it has read ``--items``
  clips in random order: USS (the pages only it holds) and PSS (its share of the pages it
  shares), from ``/proc/<pid>/smaps_rollup``, with the main process's for reference; for
  :class:`CachedClips` (columnar entries) and, as the reference, for the same clips held as a
  list of :class:`~v2a.cache.CacheEntry` objects (what the reader held before it was columnar).

    python benchmarks/bench_scale.py            # S1, ~3 min on 2 cores
    python benchmarks/bench_scale.py --quick    # 20,000 clips, 0-2 workers (smoke test)
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import pickle
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.scale_fixtures writes the synthetic dataset

from tests.scale_fixtures import scale_recipe, synthetic_clips, write_synthetic_cache  # noqa: E402
from v2a.cache import SHARDS, CacheReader  # noqa: E402
from v2a.datasets import CachedClips  # noqa: E402
from v2a.manifests import read_manifest, write_manifest  # noqa: E402
from v2a.machine import cpu_model

MB = 2**20


def seconds(repeat: int, fn, *args):
    """``fn(*args)`` and the seconds it took, the best of ``repeat`` calls (each after a full
    garbage collection)."""
    best = math.inf
    for _ in range(repeat):
        result = None  # the previous call's result is freed before the next call
        gc.collect()
        started = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - started)
    return result, best


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def json_files(cache: Path) -> list:
    """What the index is made of, parsed and nothing more: ``cache.json``, ``index.json`` and
    every shard's JSON record."""
    paths = [cache / "cache.json", cache / "index.json", *sorted((cache / SHARDS).glob("*.json"))]
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def index_bytes(cache: Path) -> int:
    paths = [cache / "cache.json", cache / "index.json", *(cache / SHARDS).glob("*.json")]
    return sum(p.stat().st_size for p in paths)


class EntryObjects(Dataset):
    """The reference: the clips of ``data`` as lists of :class:`~v2a.cache.CacheEntry`
    objects, the reader's (every clip) and the split's, as v2a held them before its index was
    columnar; items read by the same reader."""

    def __init__(self, data: CachedClips):
        self.reader = data.reader
        self.every_entry = list(data.reader.entries)
        self.entries = [e for e in self.every_entry if e.clip.in_split(data.split)]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int):
        return self.reader.item(self.entries[index])


def count_items(batch: list) -> int:
    return len(batch)


def memory(pid: int | str = "self") -> dict[str, float]:
    """USS and PSS of a process in MB, from ``/proc/<pid>/smaps_rollup``."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024  # kB
    return {"uss": fields["Private_Clean"] + fields["Private_Dirty"], "pss": fields["Pss"]}


def children() -> list[int]:
    """The processes this one started (its DataLoader workers), from ``/proc/*/stat``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended meanwhile
        if int(text.rsplit(")", 1)[1].split()[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def worker_memory(dataset: Dataset, workers: int, items: int, batch_size: int) -> dict[str, float]:
    """Memory of the main process and of each worker (mean) once every worker has read about
    ``items`` clips in random order, the workers still running."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(0)),
                        collate_fn=count_items)
    batches = iter(loader)
    read = 0
    while read < items * max(workers, 1):
        read += next(batches)
    result = {f"main_{k}": v for k, v in memory().items()}
    if workers:
        per_worker = [memory(pid) for pid in children()]
        if len(per_worker) != workers:
            raise RuntimeError(f"found {len(per_worker)} worker processes, not {workers}")
        for key in ("uss", "pss"):
            result[f"worker_{key}"] = sum(m[key] for m in per_worker) / len(per_worker)
    del batches  # ends the workers
    return result


def measure(args, root: Path) -> dict:
    clips = synthetic_clips(args.clips)
    manifest = write_manifest(clips, root / "manifest.csv")
    recipe = scale_recipe(root, manifest, root / "cache")
    write_synthetic_cache(root / "cache", recipe, clips)
    del clips
    out: dict = {"clips": args.clips}
    r = args.repeat  # [1]: what they read is dropped at once, not kept in this process
    out["read_manifest_s"] = seconds(r, read_manifest, manifest)[1]
    out["csv_s"] = seconds(r, csv_rows, manifest)[1]
    out["json_s"] = seconds(r, json_files, root / "cache")[1]
    reader, out["reader_s"] = seconds(r, CacheReader, root / "cache", recipe)
    out["entries"], out["skipped"] = len(reader.entries), len(reader.skipped)
    del reader
    data, out["cached_clips_s"] = seconds(r, CachedClips, None, recipe, "train")
    out["train_clips"] = len(data)
    out["index_bytes"] = index_bytes(root / "cache")
    out["pickled_bytes"] = len(pickle.dumps(data))
    out["memory"] = {"columns": {}, "objects": {}}
    for workers in args.workers:  # the columnar index first: the reference's objects would
        out["memory"]["columns"][workers] = worker_memory(data, workers, args.items,
                                                          args.batch_size)
    reference = EntryObjects(data)  # stay in the main process, forked into every worker
    out["pickled_objects_bytes"] = len(pickle.dumps(reference))
    for workers in args.workers:
        out["memory"]["objects"][workers] = worker_memory(reference, workers, args.items,
                                                          args.batch_size)
    return out


def report(out: dict) -> None:
    n = out["clips"]
    print(f"S1: {n} clips in the manifest, {out['entries']} in the cache ({out['skipped']} "
          f"skipped), {out['train_clips']} in train; on {cpu_model()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
          f"Python {platform.python_version()}")
    print(f"{'start-up':34s} {'s':>7s}   {'reference':36s} {'s':>7s} {'ratio':>6s}")
    rows = [("read_manifest", out["read_manifest_s"], "csv.reader of the file", out["csv_s"]),
            ("CacheReader", out["reader_s"], "json.load of the index's JSON files", out["json_s"]),
            ("CachedClips (train)", out["cached_clips_s"], "json.load of the index's JSON files",
             out["json_s"])]
    for what, s, ref, ref_s in rows:
        print(f"{what:34s} {s:7.2f}   {ref:36s} {ref_s:7.2f} {s / ref_s:6.2f}")
    print(f"index on disk: {out['index_bytes'] / MB:.1f} MB ({out['index_bytes'] / n:.0f} bytes "
          f"a clip); pickled CachedClips: {out['pickled_bytes'] / MB:.1f} MB "
          f"({out['pickled_bytes'] / out['entries']:.0f} bytes a clip), as entry objects: "
          f"{out['pickled_objects_bytes'] / MB:.1f} MB")
    print("memory (MB) after each worker read its clips; columns: CachedClips; objects: the "
          "same clips as CacheEntry objects")
    print(f"{'workers':>7s} {'main PSS':>9s} {'worker USS':>11s} {'worker PSS':>11s} "
          f"{'objects: main PSS':>18s} {'worker USS':>11s} {'worker PSS':>11s} "
          f"{'USS objects / columns':>22s}")
    columns, objects = out["memory"]["columns"], out["memory"]["objects"]
    for workers in columns:
        mine, theirs = columns[workers], objects[workers]
        line = f"{workers:7d} {mine['main_pss']:9.1f} "
        if workers:
            line += f"{mine['worker_uss']:11.1f} {mine['worker_pss']:11.1f} "
        else:
            line += f"{'':11s} {'':11s} "
        line += f"{theirs['main_pss']:18.1f} "
        if workers:
            ratio = theirs["worker_uss"] / mine["worker_uss"]
            line += f"{theirs['worker_uss']:11.1f} {theirs['worker_pss']:11.1f} {ratio:22.2f}"
        print(line)

def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=5000, help="clips each worker reads")
    parser.add_argument("--workers", default="0,1,2,4", help="DataLoader workers, comma-separated")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2, help="start-up figures: best of")
    parser.add_argument("--quick", action="store_true", help="20,000 clips, 0-2 workers")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.clips, args.items, args.workers, args.repeat = 20_000, 300, "0,1,2", 1
    args.workers = [int(w) for w in args.workers.split(",")]
    torch.set_num_threads(1)  # the workers read; nothing here computes
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # > cores: meant
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        out = measure(args, Path(tmp))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        report(out)
    return out


if __name__ == "__main__":
    main()
