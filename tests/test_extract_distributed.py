"""`torchrun --nproc_per_node 2 -m v2a extract` on the CPU (gloo): the ranks share the shards
and the cache they write is the one a single process writes, byte for byte; a rank that fails
ends the run with its sentence, and the same command finishes the cache.

The dataset: 6 generated videos and 3 clips that are skipped (an empty file, a missing one, a
clip shorter than the window), 9 clips in 5 shards of 2, so that rank 0 extracts 3 shards and
rank 1 two. The recipe is the tiny one of tests/test_cache.py.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.media_fixtures import write_dataset
from tests.test_cache import RECIPE, files_of
from v2a.cache import extract
from v2a.cli import main
from v2a.manifests import Clip, write_manifest
from v2a.recipe import load_recipe

CLIPS = [Clip("clip000.mp4"), Clip("bad/empty.mp4"), Clip("clip001.mp4"), Clip("clip002.mp4"),
         Clip("missing.mp4"), Clip("clip003.mp4"), Clip("clip004.mp4", duration=0.5),
         Clip("clip004.mp4", start=0.2), Clip("clip005.mp4")]
SHARD_SIZE = 2  # 5 shards: rank 0 takes shards 0, 2 and 4, rank 1 shards 1 and 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    write_dataset(root / "videos", 6, seconds=1.5, fps=8.0, sample_rate=16000)
    (root / "videos" / "bad").mkdir()
    (root / "videos" / "bad" / "empty.mp4").write_bytes(b"")
    write_manifest(CLIPS, root / "manifest.csv")
    (root / "recipe.yaml").write_text(RECIPE)
    return root


def overrides(dataset: Path, cache: Path) -> list[str]:
    return [f"data.manifest={dataset / 'manifest.csv'}", f"data.root={dataset / 'videos'}",
            f"data.cache={cache}"]


@pytest.fixture(scope="module")
def reference(dataset) -> Path:
    """The cache one process writes."""
    cache = dataset / "one_process"
    recipe = load_recipe(dataset / "recipe.yaml", overrides(dataset, cache))
    summary = extract(recipe, workers=0, batch_size=2, shard_size=SHARD_SIZE, progress=False)
    assert (summary.shards, summary.clips, len(summary.skipped)) == (5, 6, 3)
    return cache


def torchrun_extract(dataset: Path, cache: Path, *options: str) -> subprocess.CompletedProcess:
    """`v2a extract` of the test recipe on 2 gloo processes (the CPU, one thread each)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "v2a", "extract", str(dataset / "recipe.yaml"), *overrides(dataset, cache),
         "--shard-size", str(SHARD_SIZE), "--batch-size", "2", "--workers", "0",
         "--device", "cpu", "--no-progress", *options],
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_two_ranks_write_the_cache_one_process_writes(dataset, reference, tmp_path):
    cache = tmp_path / "cache"
    done = torchrun_extract(dataset, cache)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    # one report, rank 0's, of the whole cache and the whole run
    assert done.stdout.count("6 clips in 5 shards") == 1, done.stdout
    assert "this run extracted 9 clips" in done.stdout and "skipped 3 clips:" in done.stdout
    assert files_of(cache) == files_of(reference)


def test_a_failing_rank_ends_the_run_in_one_sentence_and_a_rerun_finishes_it(
        dataset, reference, tmp_path):
    cache = tmp_path / "cache"
    blocked = cache / "shards" / "000001.json"  # rank 1's first shard cannot be marked complete
    blocked.mkdir(parents=True)
    failed = torchrun_extract(dataset, cache)
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("v2a: error:")]
    assert errors, failed.stderr[-4000:]
    assert (f"v2a: error: cannot write the feature cache in {cache} (Is a directory); rank 1 "
            "stopped, with 0 of 5 shards complete that it knows of: continue with the same "
            "torchrun command once the folder is writable") in errors
    # rank 0 ends as torchrun stops it, or at its last wait, with a sentence of its own
    others = [e for e in errors if "rank 1 stopped" not in e]
    assert all(e.startswith("v2a: error: another rank of this extraction ended before it "
                            "finished its shards") for e in others), others
    assert not re.search(r"\[rank\d\]: Traceback", failed.stderr), failed.stderr[-4000:]

    blocked.rmdir()
    # one process continues what the two left (their shards are the ones it writes)
    assert main(["extract", str(dataset / "recipe.yaml"), *overrides(dataset, cache),
                 "--workers", "0", "--no-progress"]) == 0
    assert files_of(cache) == files_of(reference)


def test_a_rerun_on_two_ranks_extracts_only_the_missing_and_damaged_shards(
        dataset, reference, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(reference, cache)
    (cache / "shards" / "000000.json").unlink()  # never finished (a rank killed)
    (cache / "shards" / "000003.json").unlink()
    damaged = cache / "shards" / "000002.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-10])  # cut: found by the size check
    before = {p.name: p.stat().st_mtime_ns for p in (cache / "shards").iterdir()}
    done = torchrun_extract(dataset, cache)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "this run extracted 6 clips" in done.stdout  # shards 0, 2 and 3: 2 clips each
    assert ("extracted 1 damaged shards again:\n  shards/000002.safetensors: its tensor file "
            "has") in done.stdout
    assert files_of(cache) == files_of(reference)
    untouched = sorted(name for name, mtime in before.items()
                       if (cache / "shards" / name).stat().st_mtime_ns == mtime)
    assert untouched == ["000001.json", "000001.safetensors", "000004.json", "000004.safetensors"]


RANK_THAT_WAITS = """
import os, sys
from v2a.distributed import DistributedError, peers_failing_as, setup_distributed
group = setup_distributed("cpu")
if group.rank == 1:
    os._exit(3)  # ends without a word, as a killed process does
try:
    with peers_failing_as("rank 1 is gone"):
        group.barrier()
except DistributedError as exc:
    print(exc)
"""


def test_a_rank_waiting_for_one_that_ended_gets_a_sentence_at_once(tmp_path):
    """Without torchrun (which would stop the waiting rank itself): gloo fails the wait as soon
    as the other process's connection closes, and the wait turns that into one sentence."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    ranks = [subprocess.Popen([sys.executable, "-c", RANK_THAT_WAITS], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
             for r in (0, 1)]
    out = [rank.communicate(timeout=60)[0] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 3], out
    assert out[0].startswith("rank 1 is gone (") and out[0].count("\n") == 1, out[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="here --device cuda has a GPU to run on")
def test_asking_for_a_gpu_where_there_is_none_is_one_sentence(dataset, tmp_path, capsys):
    code = main(["extract", str(dataset / "recipe.yaml"), *overrides(dataset, tmp_path / "cache"),
                 "--device", "cuda", "--no-progress"])
    assert (code, capsys.readouterr().err) == (
        1, "v2a: error: --device cuda was asked for, but PyTorch sees no CUDA GPU here\n")
    assert not (tmp_path / "cache").exists()
