"""`v2a extract --status CACHE_DIR`: shards done, to do and damaged, clips extracted and skipped
(by reason), the recent rate and the time left, read from the shard files (as while an
extraction runs), and the command line's refusals.

The cache is the one of tests/test_extract_distributed.py: 9 clips (3 skipped) in 5 shards of 2.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.test_extract_distributed import dataset, reference  # noqa: F401 (fixtures)
from v2a.cache import cache_status
from v2a.cache.status import EXAMPLES, skip_reasons
from v2a.cli import main
from v2a.files import temporary_path


def status_of(cache: Path, capsys, *options: str) -> str:
    assert main(["extract", "--status", str(cache), *options]) == 0
    return capsys.readouterr().out


def test_the_status_of_a_complete_cache(reference, capsys):  # noqa: F811 (a fixture)
    out = status_of(reference, capsys).splitlines()
    assert out[:2] == [f"{reference}: 5 of 5 shards done, complete",
                       "clips: 6 extracted, 3 skipped, 0 to do, of 9 in the manifest"]
    assert out[3] == "skipped, by reason:"
    assert sorted(out[4:]) == [
        "  1 x does not exist (e.g. missing.mp4)",
        "  1 x is empty (0 bytes) (e.g. bad/empty.mp4)",
        "  1 x the manifest gives the clip 0.5 s, shorter than the window of 1 s (e.g. clip004.mp4)",
    ]
    assert not any("takes about" in line or "seems" in line for line in out)


def set_written(cache: Path, ages: dict[int, int]) -> None:
    """Make shard ``i``'s JSON written ``ages[i]`` seconds ago (whole seconds, exactly)."""
    now = time.time_ns() // 10**9 * 10**9
    for index, age in ages.items():
        stamp = now - age * 10**9
        os.utime(cache / "shards" / f"{index:06d}.json", ns=(stamp, stamp))


def test_the_status_while_an_extraction_runs_comes_from_the_shard_files(
        reference, tmp_path, capsys):  # noqa: F811 (a fixture)
    cache = tmp_path / "cache"
    shutil.copytree(reference, cache)  # index.json still says complete: status never reads it
    (cache / "shards" / "000003.json").unlink()  # shard 3 being extracted (its tensors written)
    temporary_path(cache / "shards" / "000003.json").write_text("{")  # and its JSON half-written
    damaged = cache / "shards" / "000000.safetensors"
    size = damaged.stat().st_size
    damaged.write_bytes(damaged.read_bytes()[:-10])
    # shard 4 came from an earlier run, hours ago; this run wrote shards 1 and 2, 40 s apart
    set_written(cache, {4: 10_000, 1: 50, 2: 10})
    status = json.loads(status_of(cache, capsys, "--json"))
    assert {k: status[k] for k in ("complete", "shards", "done", "todo", "damaged", "clips",
                                   "skipped", "manifest_clips", "rate_shards", "stalled")} == {
        "complete": False, "shards": 5, "done": 3, "todo": 2,
        "damaged": [f"shards/000000.safetensors: its tensor file has {size - 10} bytes, not the "
                    f"{size} written"],
        "clips": 4, "skipped": 1, "manifest_clips": 9, "rate_shards": 2, "stalled": False}
    assert [r["reason"] for r in status["skip_reasons"]] == ["does not exist"]
    # the clips of the newer of the two shards (1 extracted, 1 skipped) over the 40 s between
    # them; 4 clips to go. Whole seconds, so the one rounding is that of 2 / 40 (and 4 / 0.05).
    assert status["rate_clips_per_s"] == pytest.approx(0.05, rel=1e-12)
    assert status["eta_s"] == pytest.approx(80.0, rel=1e-12)
    out = status_of(cache, capsys)
    assert f"{cache}: 3 of 5 shards done, 2 to do (1 damaged)\n" in out
    assert "rate: 0.05 clips/s over the newest 2 shards; the newest shard was written " in out
    assert "at that rate the rest takes about 1 min 20 s\n" in out
    assert "damaged (the next `v2a extract` extracts them again):\n  shards/000000" in out

    set_written(cache, {4: 10_000, 1: 3040, 2: 3000})  # nothing for 50 min: no run goes on
    out = status_of(cache, capsys)
    assert "no extraction seems to run" in out and "takes about" not in out
    assert cache_status(cache).eta is None


def test_skipped_clips_are_grouped_by_their_reason_without_the_path(reference):  # noqa: F811
    records = [s for p in sorted((reference / "shards").glob("*.json"))
               for s in json.loads(p.read_text())["skipped"]]
    missing = next(s for s in records if s["clip"]["path"] == "missing.mp4")
    also_missing = [{"clip": {**missing["clip"], "path": f"gone{i}.mp4"},
                     "reason": missing["reason"].replace("missing.mp4", f"gone{i}.mp4")}
                    for i in range(EXAMPLES + 1)]
    groups = skip_reasons(records + also_missing)
    assert [(g.reason, g.count) for g in groups][0] == ("does not exist", EXAMPLES + 2)
    assert groups[0].examples == ("missing.mp4", "gone0.mp4", "gone1.mp4")[:EXAMPLES]
    assert sorted(g.count for g in groups) == [1, 1, EXAMPLES + 2]


def test_status_refusals_are_one_sentence(dataset, tmp_path, capsys):  # noqa: F811
    def refused(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("v2a: error: "), err
        return code, err[len("v2a: error: "):]

    (tmp_path / "videos").mkdir()
    assert refused("extract", "--status", str(tmp_path / "videos")) == (
        1, f"{tmp_path / 'videos'} is not a feature cache (it has no cache.json); give the "
           "data.cache folder `v2a extract` writes")
    assert refused("extract", "--status", str(tmp_path / "nothing"))[0] == 1
    recipe = str(dataset / "recipe.yaml")
    assert refused("extract", recipe, "--status", str(tmp_path)) == (
        2, f"--status reads a cache folder alone; give it without a RECIPE (not {recipe!r})")
    assert refused("extract") == (
        2, "v2a extract needs a RECIPE (a recipe file or the name of a built-in recipe), or "
           "--status CACHE_DIR to see how far a cache is")
    assert refused("extract", recipe, "--json") == (2, "--json goes with --status CACHE_DIR")
