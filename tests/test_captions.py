"""Captions in the data: the manifest's ``caption`` column, the converters' captions (labels in
words), ``v2a synth``'s captions (and its missing and wrong shares), and ``Batch.captions``
from cached and live datasets. Clips without a caption keep the manifest fingerprint and the
cache's clip records of before captions existed, so that existing caches stay valid."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math

import pytest
import torch

from tests.media_fixtures import write_dataset
from v2a.cache import SHARDS, extract, manifest_fingerprint
from v2a.cache.shards import clip_from_record, clip_record
from v2a.cli import main
from v2a.converters import (
    folder_manifest,
    label_caption,
    music_caption,
    music_manifest,
    vggsound_manifest,
)
from v2a.datasets import CachedClips, LiveClips
from v2a.items import Batch, ClipItem, Skipped, collate
from v2a.manifests import Clip, read_manifest, write_manifest
from v2a.recipe import load_recipe
from v2a.sequences import FeatureSequence
from v2a.synth import (
    CLASSES,
    SynthError,
    check_options,
    clip_objects,
    describe,
    read_synth_captions,
    synth_caption,
    write_synth,
)

# -- the manifest column -------------------------------------------------------------------------


def test_captions_round_trip_through_csv_and_jsonl(tmp_path):
    clips = [
        Clip("a.mp4", label="dog", caption='a dog barks, twice; "woof"'),
        Clip("b.mp4", start=3, duration=5, caption="une chèvre bêle"),
        Clip("c.mp4", split="val"),  # no caption
    ]
    for name in ("m.csv", "m.jsonl"):
        assert read_manifest(write_manifest(clips, tmp_path / name)) == clips
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == (
        "path,start,duration,label,split,caption")
    assert "caption" not in json.loads((tmp_path / "m.jsonl").read_text().splitlines()[2])
    # a blank caption cell is no caption
    (tmp_path / "blank.csv").write_text("path,caption\nx.mp4,   \ny.mp4,a horn\n")
    assert [c.caption for c in read_manifest(tmp_path / "blank.csv")] == [None, "a horn"]


def test_a_manifest_without_captions_is_written_and_fingerprinted_as_before(tmp_path):
    clips = [Clip("a.mp4", label="dog"), Clip("long.mp4", start=30, duration=10, split="val"),
             Clip("b.mp4", id="custom")]
    write_manifest(clips, tmp_path / "m.csv")
    assert (tmp_path / "m.csv").read_text() == (
        "path,start,duration,label,split,id\na.mp4,0,,dog,,\nlong.mp4,30,10,,val,\n"
        "b.mp4,0,,,,custom\n")
    # the fingerprint of before captions: the six fields of each clip as a JSON list
    h = hashlib.sha256()
    for c in clips:
        h.update(json.dumps([c.path, c.start, c.duration, c.label, c.split, c.id]).encode() + b"\n")
    assert manifest_fingerprint(clips) == h.hexdigest()[:16]
    captioned = [clips[0], Clip("long.mp4", start=30, duration=10, split="val", caption="x"),
                 clips[2]]
    assert manifest_fingerprint(captioned) != manifest_fingerprint(clips)
    # the shard's clip record: the six fields, and the caption only when there is one
    assert clip_record(clips[1]) == {"path": "long.mp4", "start": 30, "duration": 10,
                                     "label": None, "split": "val", "id": "long.mp4@30"}
    assert clip_record(captioned[1])["caption"] == "x"
    for clip in clips + captioned:
        assert clip_from_record(json.loads(json.dumps(clip_record(clip)))) == clip


def item(name: str, caption: str | None) -> ClipItem:
    return ClipItem(clip=Clip(f"{name}.mp4", caption=caption), codes=torch.zeros(2, 4).long(),
                    streams={"motion": FeatureSequence(torch.zeros(1, 3, 4), rate=4.0)},
                    audio_features=None, frame_rate=8.0)


def test_batch_captions_follow_the_clips():
    batch = collate([item("a", "a dog"), Skipped(Clip("bad.mp4", caption="x"), "bad"),
                     item("b", None)])
    assert batch.ids == ["a.mp4", "b.mp4"] and batch.captions == ["a dog", None]
    assert batch.to("cpu").captions == ["a dog", None]
    assert collate([Skipped(Clip("bad.mp4"), "bad")]).captions == []
    given = Batch(ids=["a.mp4"], clips=[Clip("a.mp4", caption="c")], codes=None, valid=None,
                  streams={}, audio_features=None, frame_rate=None, captions=["a prompt"])
    assert given.captions == ["a prompt"]
    with pytest.raises(ValueError, match="1 clips got 2 captions"):
        Batch(ids=["a.mp4"], clips=[Clip("a.mp4")], codes=None, valid=None, streams={},
              audio_features=None, frame_rate=None, captions=["x", "y"])


RECIPE = """\
name: tiny_captions
codec: {plugin: spectral_rvq, sample_rate: 8000, n_fft: 256, hop_length: 128, n_codebooks: 2,
        codebook_size: 16}
visual_encoders:
  motion: {plugin: colour_motion, fps: 4.0, grid: 2, size: 16, orientations: 2}
audio_encoder: {plugin: mel, sample_rate: 8000, n_fft: 256, hop_length: 128, n_mels: 8}
data: {clip_seconds: 1.0, num_workers: 0}
"""


def test_cached_and_live_batches_carry_the_manifest_captions(tmp_path):
    write_dataset(tmp_path / "videos", 3, seconds=1.5, fps=8.0, sample_rate=16000)
    clips = [Clip("clip000.mp4", caption="a tone, low"), Clip("clip001.mp4"),
             Clip("clip002.mp4", caption="a tone, high")]
    manifest = write_manifest(clips, tmp_path / "manifest.csv")
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    recipe = load_recipe(tmp_path / "recipe.yaml", [
        f"data.manifest={manifest}", f"data.root={tmp_path / 'videos'}",
        f"data.cache={tmp_path / 'cache'}"])
    extract(recipe, workers=0, batch_size=2, shard_size=2, progress=False)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "cache" / SHARDS).glob("*.json"))]
    stored = [r["clip"] for record in records for r in record["clips"]]
    assert [c.get("caption") for c in stored] == ["a tone, low", None, "a tone, high"]
    assert "caption" not in stored[1]  # a clip without one is recorded as before captions
    expected = ["a tone, low", None, "a tone, high"]
    cached = CachedClips(None, recipe)
    assert [c.caption for c in cached.clips] == expected
    assert collate([cached[i] for i in range(len(cached))]).captions == expected
    live = LiveClips(None, recipe)
    assert collate([live[i] for i in range(len(live))]).captions == expected


# -- converters ----------------------------------------------------------------------------------


def test_converters_use_labels_as_captions(tmp_path):
    csv_file = tmp_path / "vggsound.csv"
    csv_file.write_text('aaa,1,"engine accelerating, revving",train\n')
    vgg = vggsound_manifest(csv_file, videos=tmp_path, check_files=False)
    assert [c.caption for c in vgg.clips] == ["engine accelerating, revving"]
    assert vggsound_manifest(csv_file, videos=tmp_path, check_files=False,
                             captions=False).clips[0].caption is None

    for name in ("dog_barking/a.mp4", "b.mp4"):
        (tmp_path / "videos" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "videos" / name).write_bytes(b"x")
    folder = folder_manifest(tmp_path / "videos", labels_from_folders=True)
    assert [(c.label, c.caption) for c in folder.clips] == [(None, None),  # b.mp4
                                                            ("dog_barking", "dog barking")]
    assert folder_manifest(tmp_path / "videos").clips[1].caption is None  # no label, no caption
    assert label_caption("  cat__meowing ") == "cat meowing" and label_caption("_") is None

    music = tmp_path / "MUSIC_duet_videos.json"
    music.write_text(json.dumps({"videos": {"acoustic_guitar": ["g1"], "flute violin": ["d1"]}}))
    found = {c.path: c.caption
             for c in music_manifest([music], videos=tmp_path, check_files=False).clips}
    assert found == {"acoustic_guitar/g1.mp4": "playing the acoustic guitar",
                     "flute violin/d1.mp4": "playing the flute and the violin"}
    assert music_caption("") is None


def test_manifest_command_writes_captions_unless_told_not_to(tmp_path, capsys):
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "a.mp4").write_bytes(b"x")
    out = tmp_path / "m.csv"
    assert main(["manifest", "folder", str(tmp_path), "--labels", "-o", str(out)]) == 0
    assert [c.caption for c in read_manifest(out)] == ["dog"]
    assert main(["manifest", "folder", str(tmp_path), "--labels", "--no-captions", "-o",
                 str(out), "--overwrite"]) == 0
    assert out.read_text().splitlines()[0] == "path,start,duration,label,split"
    capsys.readouterr()


# -- v2a synth -----------------------------------------------------------------------------------


def test_a_synth_caption_names_the_objects_shown():
    red, green, blue, yellow = CLASSES
    assert describe([(red, "bounce"), (blue, "flash")]) == (
        "a red disc bouncing and a blue triangle flashing")
    for index in range(40):
        objects = clip_objects(5, index)
        caption = synth_caption(5, index, objects)
        assert caption.given == caption.shown == describe([(o.cls, o.motion) for o in objects])
        assert not caption.wrong
        assert synth_caption(5, index, objects) == caption  # deterministic


# Each clip's draw is a fair uniform, so the number of clips with a missing (or wrong) caption
# is Binomial(N, p). These seeds are fixed, so each count is a fixed number; the bound of 5
# standard deviations is one that a fair draw would break with a chance under 1e-6.
def within_binomial(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("missing,wrong", [(0.1, 0.2), (0.5, 0.0), (0.0, 0.35)])
def test_missing_and_wrong_shares_are_as_asked_and_wrong_ones_never_describe_the_clip(
        missing, wrong):
    n = 3000
    captions = [synth_caption(11, k, clip_objects(11, k, seconds=2.0), missing=missing,
                              wrong=wrong) for k in range(n)]
    assert within_binomial(sum(c.given is None for c in captions), n, missing)
    assert within_binomial(sum(c.wrong for c in captions), n, wrong)
    names = [c.name.replace("_", " ") for c in CLASSES]
    for caption in captions:
        if caption.wrong:
            shown = {name for name in names if name in caption.shown}
            given = {name for name in names if name in caption.given}
            assert not shown & given and len(given) == len(shown)
            assert caption.given.count(" and ") == caption.shown.count(" and ")
        elif caption.given is not None:
            assert caption.given == caption.shown
    # the shares never change which objects a clip shows, nor a clip that keeps its caption
    plain = [synth_caption(11, k, clip_objects(11, k, seconds=2.0)) for k in range(n)]
    assert [c.shown for c in captions] == [c.shown for c in plain]


def test_synth_writes_captions_to_the_manifest_and_the_truth_to_captions_csv(tmp_path):
    out = write_synth(tmp_path / "d", 6, 7, seconds=1.0, fps=10, size=16, sample_rate=8000,
                      caption_missing=0.3, caption_wrong=0.3)
    truth = read_synth_captions(out / "captions.csv")
    clips = read_manifest(out / "manifest.csv")
    assert list(truth) == [c.id for c in clips]
    for index, clip in enumerate(clips):
        expected = synth_caption(7, index, clip_objects(7, index, seconds=1.0, fps=10, size=16),
                                 missing=0.3, wrong=0.3)
        assert truth[clip.id] == expected and clip.caption == expected.given
    rows = list(csv.DictReader(io.StringIO((out / "captions.csv").read_text())))
    assert list(rows[0]) == ["clip", "caption", "given", "caption_wrong"]
    kinds = {(t.given is None, t.wrong) for t in truth.values()}
    assert kinds == {(True, False), (False, True), (False, False)}  # seed 7: all three kinds
    again = write_synth(tmp_path / "e", 6, 7, seconds=1.0, fps=10, size=16, sample_rate=8000,
                        caption_missing=0.3, caption_wrong=0.3)
    for name in ("captions.csv", "manifest.csv"):
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_bad_caption_shares_are_refused_in_one_sentence(tmp_path, capsys):
    base = dict(clips=1, seconds=2.0, fps=25.0, size=32, sample_rate=16000)
    with pytest.raises(SynthError, match="--caption-wrong must be a fraction between 0 and 1"):
        check_options(**base, caption_wrong=1.5)
    with pytest.raises(SynthError, match="--caption-missing must be a fraction"):
        check_options(**base, caption_missing=float("nan"))
    assert main(["synth", "--out", str(tmp_path / "x"), "--clips", "1", "--caption-missing",
                 "0.6", "--caption-wrong", "0.5"]) == 2
    assert "must add up to at most 1, got 0.6 + 0.5" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
