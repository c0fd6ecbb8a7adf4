"""`v2a extract` and the feature cache: shapes and rates, resume after a kill, refusals, bad clips,
and LiveClips = CachedClips.

The dataset: 8 generated videos with sound (1.5 s) and one file of each kind of bad media,
interleaved in the manifest so that bad clips fall in several shards (shard 1 holds only bad
ones), plus a missing file and a clip whose manifest duration is shorter than the window. The
recipe: tiny real components (spectral RVQ codec, colour_motion and a small random CLIP, mel)
with a 1 s window.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import traceback
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import v2a.cache.extraction
from tests.media_fixtures import BROKEN_REASONS, write_broken, write_dataset
from v2a.cache import (
    CacheError,
    CacheMismatchError,
    FeatureEncoder,
    cache_identity,
    cache_key,
    decode_clip,
    extract,
    first_difference,
)
from v2a.cli import main
from v2a.converters import folder_manifest
from v2a.datasets import CachedClips, LiveClips
from v2a.features import encode_frames, encode_video, encode_windows, frame_request
from v2a.files import is_temporary, temporary_path
from v2a.items import Skipped, collate
from v2a.manifests import Clip, write_manifest
from v2a.media import find_video, load_audio, load_video
from v2a.recipe import build_frozen, load_recipe
from v2a.weights import save_state

RECIPE = """\
name: tiny_data
codec: {plugin: spectral_rvq, sample_rate: 8000, n_fft: 256, hop_length: 128, n_codebooks: 2,
        codebook_size: 16}
visual_encoders:
  motion: {plugin: colour_motion, fps: 4.0, grid: 2, size: 16, orientations: 2}
  clip: {plugin: clip, weights: none, fps: 2.0, image_size: 32, patch_size: 16, width: 64,
         layers: 1, heads: 2, embed_dim: 16}
audio_encoder: {plugin: mel, sample_rate: 8000, n_fft: 256, hop_length: 128, n_mels: 8}
data: {clip_seconds: 1.0, num_workers: 0}
"""

GOOD = ["clip000.mp4", "clip001.mp4@0.4", "clip002.mp4", "clip003.mp4", "clip004.mp4",
        "clip006.mp4", "clip007.mp4"]
# (clip id, words of its reason): exactly the clips extraction must skip
BAD = {
    "bad/broken_empty.mp4": BROKEN_REASONS["empty"],
    "bad/broken_not_media.mp4": BROKEN_REASONS["not_media"],
    "bad/broken_truncated.mp4": BROKEN_REASONS["truncated"],
    "missing.mp4": "does not exist",
    "bad/broken_no_video.mp4": BROKEN_REASONS["no_video"],
    "bad/broken_no_audio.mp4": BROKEN_REASONS["no_audio"],
    "clip005.mp4": "the manifest gives the clip 0.5 s, shorter than the window of 1 s",
    "bad/broken_too_short.mp4": BROKEN_REASONS["too_short"],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    write_dataset(root / "videos", 8, seconds=1.5, fps=8.0, sample_rate=16000)
    write_broken(root / "videos" / "bad", seconds=1.0)
    clips = [
        Clip("clip000.mp4"), Clip("clip001.mp4", start=0.4), Clip("bad/broken_empty.mp4"),
        Clip("bad/broken_not_media.mp4"), Clip("bad/broken_truncated.mp4"), Clip("missing.mp4"),
        Clip("clip002.mp4"), Clip("clip003.mp4", split="val"), Clip("bad/broken_no_video.mp4"),
        Clip("clip004.mp4"), Clip("bad/broken_no_audio.mp4"), Clip("clip005.mp4", duration=0.5),
        Clip("bad/broken_too_short.mp4"), Clip("clip006.mp4"), Clip("clip007.mp4", split="test"),
    ]
    write_manifest(clips, root / "manifest.csv")
    (root / "recipe.yaml").write_text(RECIPE)
    return root


def recipe_for(dataset: Path, cache: Path | str, *overrides: str):
    return load_recipe(dataset / "recipe.yaml", [
        f"data.manifest={dataset / 'manifest.csv'}", f"data.root={dataset / 'videos'}",
        f"data.cache={cache}", *overrides,
    ])


def extract_args(dataset: Path, cache: Path, *options: str, manifest: Path | None = None) -> list[str]:
    """`v2a extract` arguments for the test recipe (overrides first: argparse wants them so)."""
    return ["extract", str(dataset / "recipe.yaml"),
            f"data.manifest={manifest or dataset / 'manifest.csv'}",
            f"data.root={dataset / 'videos'}", f"data.cache={cache}", *options]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(dataset):
    """An uninterrupted extraction with parallel decoding (2 worker processes)."""
    cache = dataset / "reference_cache"
    summary = extract(recipe_for(dataset, cache), workers=2, batch_size=2, shard_size=3,
                      progress=False)
    return cache, summary


# -- what the trainer reads ----------------------------------------------------------------------


def test_cache_gives_the_shapes_and_rates_the_trainer_needs(dataset, reference):
    cache, summary = reference
    recipe = recipe_for(dataset, cache)
    assert (summary.clips, summary.shards, summary.clips_done_now) == (7, 5, 15)
    train = CachedClips(None, recipe, split="train")  # data.cache of the recipe
    assert [c.id for c in train.clips] == [g for g in GOOD if g not in ("clip003.mp4", "clip007.mp4")]
    assert [c.id for c in CachedClips(cache, recipe, split="val").clips] == ["clip003.mp4"]
    everything = CachedClips(cache, recipe)
    assert [c.id for c in everything.clips] == GOOD

    batch = collate([everything[i] for i in range(len(everything))])
    b = len(GOOD)
    # spectral RVQ at 8 kHz, hop 128: 62.5 frames/s, ceil(8000 / 128) = 63 frames in 1 s
    assert batch.codes.shape == (b, 2, 63) and batch.codes.dtype == torch.long
    assert batch.valid.shape == (b, 63) and batch.valid.all() and batch.frame_rate == 62.5
    assert int(batch.codes.max()) < 16
    motion, clip = batch.streams["motion"], batch.streams["clip"]
    assert motion.values.shape == (b, 4, (6 + 2) * 4 + 5) and (motion.rate, motion.start) == (4.0, 0.0)
    assert clip.values.shape == (b, 2, 16) and clip.rate == 2.0 and clip.values.dtype == torch.float32
    audio = batch.audio_features
    assert audio.values.shape == (b, 63, 8) and audio.rate == 62.5
    assert batch.ids == GOOD and batch.clips[1] == Clip("clip001.mp4", start=0.4)

    # the codes are the codec's codes of the clip's own window (clip001 starts at 0.4 s)
    codec = build_frozen(recipe.choice("codec"))
    wav = load_audio(dataset / "videos" / "clip001.mp4", sample_rate=8000, channels=1,
                     start=0.4, duration=1.0)
    assert torch.equal(batch.codes[1], codec.encode(wav[None])[0])

    # through a DataLoader with worker processes, as the trainer reads it
    loader = DataLoader(everything, batch_size=4, collate_fn=collate, num_workers=2)
    batches = list(loader)
    assert [len(x) for x in batches] == [4, 3]
    assert torch.equal(torch.cat([x.codes for x in batches]), batch.codes)
    assert torch.equal(torch.cat([x.streams["clip"].values for x in batches]), clip.values)


def test_bad_clips_are_skipped_and_reported_exactly(dataset, reference, capsys):
    cache, summary = reference
    reasons = {s.clip.id: s.reason for s in summary.skipped}
    assert set(reasons) == set(BAD)
    for clip_id, words in BAD.items():
        assert words in reasons[clip_id], (clip_id, reasons[clip_id])
        assert clip_id.split("@")[0] in reasons[clip_id] and "\n" not in reasons[clip_id]
    tsv = (cache / "skipped.tsv").read_text().splitlines()
    assert tsv[0] == "id\tpath\treason" and len(tsv) == 1 + len(BAD)
    assert {s.clip.id for s in CachedClips(cache, recipe_for(dataset, cache)).skipped} == set(BAD)

    # `v2a extract` on the finished cache does nothing and prints the same summary
    code = main(extract_args(dataset, cache, "--no-progress"))
    out = capsys.readouterr().out
    assert code == 0
    assert "7 clips in 5 shards" in out and "this run extracted 0 clips" in out
    assert f"skipped {len(BAD)} clips:" in out
    for clip_id in BAD:
        assert clip_id.split("@")[0] in out


def test_live_clips_match_cached_clips(dataset, reference):
    cache, summary = reference
    recipe = recipe_for(dataset, cache)
    cached = CachedClips(cache, recipe)
    live = LiveClips(dataset / "manifest.csv", recipe)  # data.root from the recipe
    items = [live[i] for i in range(len(live))]
    skipped = {i.clip.id: i.reason for i in items if isinstance(i, Skipped)}
    assert skipped == {s.clip.id: s.reason for s in summary.skipped}
    good = [i for i in items if not isinstance(i, Skipped)]
    assert [i.id for i in good] == GOOD
    for mine, theirs in zip(good, (cached[i] for i in range(len(cached)))):
        assert torch.equal(mine.codes, theirs.codes)
        assert mine.frame_rate == theirs.frame_rate
        pairs = [(mine.streams[n], theirs.streams[n]) for n in ("motion", "clip")]
        for a, c in [*pairs, (mine.audio_features, theirs.audio_features)]:
            assert (a.rate, a.start, a.values.shape) == (c.rate, c.start, c.values.shape)
            # the cache holds float16: equal up to its rounding
            torch.testing.assert_close(a.values, c.values.float(), rtol=2e-3, atol=1e-3)

    # LiveClips in DataLoader workers, skipped clips reported by the batch
    loader = DataLoader(live, batch_size=len(live), collate_fn=collate, num_workers=2)
    (batch,) = list(loader)
    assert batch.ids == GOOD and {s.clip.id for s in batch.skipped} == set(BAD)
    reference_batch = collate([cached[i] for i in range(len(cached))])
    assert torch.equal(batch.codes, reference_batch.codes)
    torch.testing.assert_close(batch.streams["clip"].values, reference_batch.streams["clip"].values,
                               rtol=2e-3, atol=1e-3)


# -- one way from frames to streams -----------------------------------------------------------


def test_generation_and_the_cache_encode_a_window_alike(dataset, tmp_path):
    """encode_video (generation, evaluation) and the cache's batched FeatureEncoder go through
    the same frame request, byte conversion and encoder call: the same window gives the same
    streams, bit for bit (one clip, so both run the very same forward pass)."""
    recipe = recipe_for(dataset, tmp_path / "unused")
    encoder = FeatureEncoder(recipe)
    clip = Clip("clip001.mp4", start=0.4)
    (item,) = encoder.encode([decode_clip(clip, dataset / "videos", encoder.request)])
    with torch.inference_mode():
        streams = encode_video(encoder.streams, dataset / "videos" / clip.path, 1.0, start=0.4)
    assert set(streams) == set(item.streams) == {"motion", "clip"}
    for name, seq in streams.items():
        cached = item.streams[name]
        assert (seq.rate, seq.start) == (cached.rate, cached.start)
        assert torch.equal(seq.values.float(), cached.values)


def test_encode_windows_batches_alike_windows_and_separates_the_others(dataset, tmp_path):
    encoder = FeatureEncoder(recipe_for(dataset, tmp_path / "unused"))
    motion = {"motion": encoder.streams["motion"]}
    request = frame_request(motion["motion"])
    decoded = [decode_clip(Clip(name), dataset / "videos", encoder.request)
               for name in ("clip000.mp4", "clip002.mp4")]
    frames, times = decoded[0].video[request]
    shorter = {request: (frames[:-1], times[:-1])}  # one frame less: another batch
    windows = [decoded[0].video, shorter, decoded[1].video]
    batches = []
    real_encode = motion["motion"].encode

    def counting_encode(frames, times):
        batches.append(frames.shape[0])
        return real_encode(frames, times)

    with torch.inference_mode():
        motion["motion"].encode = counting_encode
        streams = encode_windows(motion, windows)
        del motion["motion"].encode
        alone = encode_frames(motion["motion"], shorter[request][0][None], shorter[request][1])
    assert batches == [2, 1]  # the two 1 s windows in one forward pass, the shorter one alone
    assert [s["motion"].values.shape[1] for s in streams] == [4, 3, 4]
    # float32 on the CPU, trimmed, equal to encoding the window on its own (the same pass)
    assert streams[1]["motion"].values.dtype == torch.float32
    assert torch.equal(streams[1]["motion"].values, alone.values.float())


# -- resume ----------------------------------------------------------------------------------


def test_resume_after_an_exception_gives_the_same_cache(dataset, reference, monkeypatch):
    cache = dataset / "interrupted_cache"
    recipe = recipe_for(dataset, cache)
    real_write_shard = v2a.cache.extraction.write_shard
    calls = []

    def failing_write_shard(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C while shard 2 was being written
        calls.append(args[1])
        return real_write_shard(*args, **kwargs)

    monkeypatch.setattr(v2a.cache.extraction, "write_shard", failing_write_shard)
    with pytest.raises(KeyboardInterrupt):
        extract(recipe, workers=0, batch_size=2, shard_size=3, progress=False)
    index = (cache / "index.json").read_text()
    assert '"complete": false' in index and calls == [0, 1]
    with pytest.raises(CacheError, match=r"unfinished \(2 of 5 shards\); finish it with `v2a extract") as error:
        CachedClips(cache, recipe)
    assert f"`v2a extract {recipe.source} data.manifest=" in str(error.value)  # as the user gave it
    assert f" data.cache={cache}` (it continues where it stopped)" in str(error.value)
    partial = CachedClips(cache, recipe, allow_partial=True)
    assert [c.id for c in partial.clips] == GOOD[:2]  # shard 1 holds only bad clips

    calls.clear()
    def counting_write_shard(*args, **kwargs):
        calls.append(args[1])
        return real_write_shard(*args, **kwargs)

    monkeypatch.setattr(v2a.cache.extraction, "write_shard", counting_write_shard)
    summary = extract(recipe, workers=0, batch_size=2, progress=False)  # shard size from the cache
    assert calls == [2, 3, 4] and summary.shards_done_now == 3 and summary.clips_done_now == 9
    assert files_of(cache) == files_of(reference[0])


#: Where a SIGKILL can land while a shard is written, as (file renamed into place, which of
#: its renames, before or after it): every file is written to a temporary and renamed, so
#: these are all the states a killed extraction can leave (shard size 3: shard 2 is the first
#: after one without tensors).
KILL_POINTS = {
    "cache.json written, not renamed": ("cache.json", 1, "before"),
    "shard tensors written, not renamed": ("shards/000002.safetensors", 1, "before"),
    "shard tensors renamed, their JSON not written": ("shards/000002.safetensors", 1, "after"),
    "shard JSON written, not renamed": ("shards/000002.json", 1, "before"),
    "shard JSON renamed, the index not rewritten": ("shards/000002.json", 1, "after"),
    "index written, not renamed": ("index.json", 4, "before"),  # at the start, after shards 0-2
}


def extract_killed(recipe, cache: Path, target: str, occurrence: int, when: str) -> int:
    """Run extract in a forked child that SIGKILLs itself just before or after the
    ``occurrence``-th rename onto ``cache / target``; returns the child's exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            real_replace, seen = os.replace, []

            def replace(src, dst, *args, **kwargs):
                hit = Path(dst) == cache / target
                seen.extend([dst] if hit else [])
                kill = hit and len(seen) == occurrence
                if kill and when == "before":
                    os.kill(os.getpid(), signal.SIGKILL)
                real_replace(src, dst, *args, **kwargs)
                if kill and when == "after":
                    os.kill(os.getpid(), signal.SIGKILL)

            os.replace = replace
            extract(recipe, workers=0, batch_size=2, shard_size=3, progress=False)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_resume_after_sigkill_gives_the_same_cache(dataset, reference, tmp_path, point):
    target, occurrence, when = KILL_POINTS[point]
    killed = tmp_path / "killed"
    assert extract_killed(recipe_for(dataset, killed), killed, target, occurrence, when) == -signal.SIGKILL
    left = [p.relative_to(killed).as_posix() for p in killed.rglob("*") if p.is_file()]
    temporaries = [p for p in left if is_temporary(p)]
    if when == "before":  # the kill left the temporary of the file it was about to rename
        assert [Path(p).parent for p in temporaries] == [Path(target).parent], left
        assert target not in left or target == "index.json"
    else:
        assert target in left and not temporaries, left
    if target != "cache.json":
        assert '"complete": false' in (killed / "index.json").read_text()
        # what other runs may have left: tensors whose JSON never came, the temporary of a dead
        # process (a pid above pid_max)
        (killed / "shards" / "000004.safetensors").write_bytes(b"tensors whose JSON never came")
        dead = str(temporary_path(killed / "shards" / "000003.safetensors")).replace(
            f"-{os.getpid()}-", "-99999999-")
        Path(dead).write_bytes(b"half a file")

    assert main(extract_args(dataset, killed, "--shard-size", "3", "--workers", "0",
                             "--no-progress")) == 0
    assert files_of(killed) == files_of(reference[0])  # nothing but complete files remain


# -- damaged shards -------------------------------------------------------------------------------


def tensor_span(shard: Path, name: str) -> tuple[int, int]:
    """Where tensor ``name``'s bytes lie in a safetensors file (absolute offsets)."""
    length = int.from_bytes(shard.read_bytes()[:8], "little")
    first, last = json.loads(shard.read_bytes()[8:8 + length])[name]["data_offsets"]
    return 8 + length + first, 8 + length + last


def damaged_copy(reference: Path, tmp_path: Path) -> tuple[Path, Path]:
    cache = tmp_path / "cache"
    shutil.copytree(reference, cache)
    return cache, cache / "shards" / "000002.safetensors"


def test_a_shard_whose_tensor_bytes_changed_is_named_with_the_command_that_redoes_it(
        dataset, reference, tmp_path, monkeypatch, capsys):
    cache, shard = damaged_copy(reference[0], tmp_path)
    size = shard.stat().st_size
    first, last = tensor_span(shard, "0.codes")  # clip002's codes: out of the codebook, as a
    with open(shard, "r+b") as f:                # disk error can make them
        f.seek(first)
        f.write(b"\xff\x7f" * ((last - first) // 2))
    assert shard.stat().st_size == size
    recipe = recipe_for(dataset, cache, "training.batch_size=7")  # an override to repeat
    data = CachedClips(cache, recipe)  # the header is intact: found when the tensors are read
    position = data.clips.index(Clip("clip002.mp4"))
    with pytest.raises(CacheError) as error:
        data[position]
    command = ("v2a extract " + str(recipe.source) + f" data.manifest={dataset / 'manifest.csv'}"
               f" data.root={dataset / 'videos'} data.cache={cache} training.batch_size=7 --verify")
    assert str(error.value) == (
        f"the shard {shard} is damaged (the tensors of clip002.mp4 changed since extraction: "
        f"their checksum differs); extract it again with `{command}`")
    assert data[0].codes is not None  # the other clips still read

    # `v2a extract` checks headers only (cheap); --verify hashes the shards and redoes that one
    real_write_shard, redone = v2a.cache.extraction.write_shard, []
    monkeypatch.setattr(v2a.cache.extraction, "write_shard",
                        lambda *a, **k: redone.append(a[1]) or real_write_shard(*a, **k))
    assert main(extract_args(dataset, cache, "--no-progress")) == 0 and redone == []
    capsys.readouterr()
    assert main(extract_args(dataset, cache, "--no-progress", "--verify")) == 0 and redone == [2]
    out = capsys.readouterr().out  # 4 checksums: shard 1 holds no tensors
    assert ("checked the checksums of 4 shards: 1 damaged\nextracted 1 damaged shards again:\n"
            "  shards/000002.safetensors: its bytes changed since extraction (the checksum "
            "differs)") in out
    assert files_of(cache) == files_of(reference[0])


@pytest.mark.parametrize("damage", ["header", "cut", "gone"])
def test_a_shard_with_a_damaged_header_or_size_is_found_at_start_and_redone(
        dataset, reference, tmp_path, monkeypatch, damage):
    cache, shard = damaged_copy(reference[0], tmp_path)
    content = shard.read_bytes()
    if damage == "header":  # the same length, so only the header's contents tell
        assert content.count(b'"shape":[2,63]') >= 1
        shard.write_bytes(content.replace(b'"shape":[2,63]', b'"shape":[3,42]', 1))
        words = "its header is corrupted (at tensor"
    elif damage == "cut":
        shard.write_bytes(content[:-100])
        words = f"its tensor file has {len(content) - 100} bytes, not the {len(content)} written"
    else:
        shard.unlink()
        words = "its tensor file is missing"
    recipe = recipe_for(dataset, cache)
    with pytest.raises(CacheError, match=rf"^the shard {shard} is damaged \({re.escape(words)}.*\); "
                                         r"extract it again with `v2a extract .* --verify`$"):
        CachedClips(cache, recipe)
    real_write_shard, redone = v2a.cache.extraction.write_shard, []
    monkeypatch.setattr(v2a.cache.extraction, "write_shard",
                        lambda *a, **k: redone.append(a[1]) or real_write_shard(*a, **k))
    summary = extract(recipe, workers=0, progress=False)
    assert redone == [2] and len(summary.damaged) == 1
    assert summary.damaged[0].startswith(f"shards/000002.safetensors: {words}")
    assert files_of(cache) == files_of(reference[0])


def test_a_full_disk_stops_extraction_in_one_sentence_and_it_continues_later(
        dataset, reference, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    recipe = recipe_for(dataset, cache)
    real_write_shard = v2a.cache.extraction.write_shard

    def write_shard(cache_dir, index, *args, **kwargs):
        if index == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(cache_dir / "shards"))
        return real_write_shard(cache_dir, index, *args, **kwargs)

    monkeypatch.setattr(v2a.cache.extraction, "write_shard", write_shard)
    with pytest.raises(CacheError) as error:
        extract(recipe, workers=0, batch_size=2, shard_size=3, progress=False)
    assert str(error.value) == (
        f"cannot write the feature cache in {cache} (No space left on device); 2 of 5 shards are "
        f"complete: continue with `v2a extract {recipe.source} data.manifest={dataset / 'manifest.csv'} "
        f"data.root={dataset / 'videos'} data.cache={cache}` once its disk has space again")
    monkeypatch.undo()
    extract(recipe, workers=0, batch_size=2, progress=False)
    assert files_of(cache) == files_of(reference[0])


def test_folder_scans_never_take_a_v2a_temporary_for_a_video(dataset, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(dataset / "videos" / "clip000.mp4", folder / "a.mp4")
    being_written = temporary_path(folder / "b.mp4")  # `.b.v2a-tmp-<host>-<pid>-<hex>.mp4`
    shutil.copy(dataset / "videos" / "clip001.mp4", being_written)
    assert [c.path for c in folder_manifest(folder).clips] == ["a.mp4"]
    assert find_video(folder, being_written.name) is None
    assert find_video(folder, "a.mkv") == folder / "a.mp4"


# -- refusals --------------------------------------------------------------------------------


def test_a_changed_encoder_is_refused(dataset, reference, capsys):
    cache = reference[0]
    before = files_of(cache)
    changed = recipe_for(dataset, cache, "visual_encoders.motion.grid=4")
    expected = (r"extracted with other components or options "
                r"\(visual_encoders\.motion\.grid: 2 in the cache, 4 now\)")
    with pytest.raises(CacheMismatchError, match=expected):
        extract(changed, progress=False)
    with pytest.raises(CacheMismatchError, match=expected):
        CachedClips(cache, changed)
    with pytest.raises(CacheMismatchError, match=r"clip_seconds: 1\.0 in the cache, 0\.5 now"):
        CachedClips(cache, recipe_for(dataset, cache, "data.clip_seconds=0.5"))
    with pytest.raises(CacheMismatchError, match=r"visual_encoders\.extra is new"):
        CachedClips(cache, recipe_for(dataset, cache, "visual_encoders.extra={plugin: colour_motion}"))
    # options that do not change the cached features do not matter
    CachedClips(cache, recipe_for(dataset, cache, "training.batch_size=7"))

    code = main(extract_args(dataset, cache, "codec.n_codebooks=3"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "codec.n_codebooks: 2 in the cache, 3 now" in err and "give another data.cache folder" in err
    with pytest.raises(CacheMismatchError, match="has dtype float16, not float32"):
        extract(recipe_for(dataset, cache), dtype="float32", progress=False)
    assert files_of(cache) == before  # nothing was touched


def test_another_manifest_is_refused(dataset, reference, tmp_path):
    cache = reference[0]
    manifest = tmp_path / "other.csv"
    write_manifest([Clip("clip000.mp4")], manifest)
    recipe = recipe_for(dataset, cache, f"data.manifest={manifest}")
    with pytest.raises(CacheMismatchError, match=r"from another manifest \(15 clips, now 1"):
        extract(recipe, progress=False)
    with pytest.raises(CacheError, match="there is no feature cache in"):
        CachedClips(tmp_path / "nothing", recipe)


def test_weights_files_count_by_content(dataset, tmp_path):
    def identity(weights: Path) -> dict:
        return cache_identity(load_recipe(dataset / "recipe.yaml", [f"codec.weights={weights}"]))

    weights = tmp_path / "codec.safetensors"
    state = build_frozen(recipe_for(dataset, tmp_path / "c").choice("codec")).state_dict()
    save_state(state, weights)
    old = identity(weights)
    moved = tmp_path / "moved" / "codec.safetensors"
    moved.parent.mkdir()
    moved.write_bytes(weights.read_bytes())
    assert cache_key(identity(moved)) == cache_key(old)  # the same file elsewhere: same key
    refitted = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    save_state(refitted, weights)
    new = identity(weights)
    assert cache_key(new) != cache_key(old)
    assert first_difference(old["components"], new["components"]) == (
        "codec.weights: the weights file's content changed")


def test_no_usable_clip_is_an_error(dataset, tmp_path, capsys):
    manifest = tmp_path / "bad.csv"
    write_manifest([Clip("bad/broken_empty.mp4"), Clip("missing.mp4")], manifest)
    code = main(extract_args(dataset, tmp_path / "cache", "--no-progress", manifest=manifest))
    captured = capsys.readouterr()
    assert code == 1
    assert "skipped 2 clips:" in captured.out and "is empty (0 bytes)" in captured.out
    assert "no clip of" in captured.err and "could be extracted" in captured.err


def test_forked_workers_leave_decoded_frames_to_the_parent(dataset):
    """Frames decoded in this process sit in reference cycles (PyAV 18); a forked child must not
    collect them (freeing their scaler there can hang on the parent's threads)."""
    import gc

    gc.collect()
    gc.disable()
    try:
        load_video(dataset / "videos" / "clip000.mp4", fps=4.0, size=(16, 16), duration=1.0)
        pid = os.fork()
        if pid == 0:  # the child: exit status = how many inherited objects it collected
            os._exit(min(gc.collect(), 255))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert gc.collect() > 0  # the parent still collects its own garbage
    finally:
        gc.enable()
