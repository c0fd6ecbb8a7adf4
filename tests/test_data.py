"""Manifests, the VGGSound / folder / MUSIC converters, collate and `v2a manifest`."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from tests.media_fixtures import write_broken, write_video
from v2a.cli import main
from v2a.converters import folder_manifest, hashed_split, music_manifest, vggsound_manifest, windows
from v2a.items import Batch, ClipItem, Skipped, collate
from v2a.manifests import Clip, ManifestError, read_manifest, write_manifest
from v2a.sequences import FeatureSequence

# -- manifests ---------------------------------------------------------------------------------


def test_csv_and_jsonl_round_trip(tmp_path):
    clips = [
        Clip("a.mp4"),
        Clip("long.mp4", start=30, duration=10, label="dog, barking", split="val"),
        Clip("long.mp4", start=40.5, duration=10, label="dog, barking", split="test"),
        Clip("b.mp4", duration=2.25, id="custom"),
    ]
    for name in ("m.csv", "m.jsonl"):
        path = write_manifest(clips, tmp_path / name)
        assert read_manifest(path) == clips
    assert [c.id for c in clips] == ["a.mp4", "long.mp4@30", "long.mp4@40.5", "custom"]
    text = (tmp_path / "m.csv").read_text().splitlines()
    assert text[0] == "path,start,duration,label,split,id"
    assert text[2] == 'long.mp4,30,10,"dog, barking",val,'


def test_split_filter_and_default_split(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("path,split\na.mp4,train\nb.mp4,\nc.mp4,val\n# a comment\n\nd.mp4,test\n")
    assert [c.path for c in read_manifest(path)] == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert [c.path for c in read_manifest(path, split="train")] == ["a.mp4", "b.mp4"]  # none = train
    assert [c.path for c in read_manifest(path, split="val")] == ["c.mp4"]
    clip = read_manifest(path)[1]
    assert clip.start == 0 and clip.duration is None and clip.label is None and clip.split is None


@pytest.mark.parametrize("text, fragment", [
    ("path,strat\na.mp4,1\n", "line 1: unknown column 'strat'; did you mean 'start'?"),
    ("file,start\na.mp4,1\n", "unknown column 'file'"),
    ("start\n1\n", "needs a 'path' column"),
    ("path,start\na.mp4,soon\n", "line 2: start 'soon' is not a number of seconds"),
    ("path,duration\na.mp4,0\n", "line 2: duration must be positive seconds"),
    ("path,start\na.mp4,-1\n", "line 2: start must be zero or more seconds"),
    ("path,start\na.mp4,0\nb.mp4,0\na.mp4,0\n", "line 4: the clip 'a.mp4' is listed twice (also line 2)"),
    ("path\na.mp4,1\n", "line 2: 2 fields for 1 columns"),
    ("", "is empty"),
])
def test_bad_manifests_give_one_sentence(tmp_path, text, fragment):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_bad_jsonl_and_missing_manifest(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": "a.mp4"}\n{"path": "b.mp4", "start": "x"}\n')
    with pytest.raises(ManifestError, match=r"line 2: start 'x' is not a number"):
        read_manifest(path)
    path.write_text('{"path": "a.mp4"}\n[1, 2]\n')
    with pytest.raises(ManifestError, match="line 2: each line must be a JSON object"):
        read_manifest(path)
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")


# -- converters --------------------------------------------------------------------------------


def test_windows():
    assert windows(10.0, 10.0, None) == [0]
    assert windows(9.9, 10.0, None) == []
    assert windows(25.0, 10.0, None) == [0, 10]
    assert windows(2.5, 1.0, 0.5) == [0, 0.5, 1.0, 1.5]


def test_vggsound_layout(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    csv_file = tmp_path / "vggsound.csv"
    csv_file.write_text(
        "---g-f_I2yQ,1,people marching,test\n"
        '--0PQM4-hqg,30,"engine accelerating, revving, vroom",train\n'
        "--56QUhyDQM,185,playing tennis,train\n"
        "-missing-id,0,dog barking,train\n"
    )
    for name in ("---g-f_I2yQ_000001.mp4", "--0PQM4-hqg_000030.mp4", "--56QUhyDQM_000185.mkv"):
        (videos / name).write_bytes(b"x")  # only existence is checked here
    result = vggsound_manifest(csv_file, videos=videos)
    assert result.clips == [
        Clip("---g-f_I2yQ_000001.mp4", 0, 10, "people marching", "test",
             caption="people marching"),  # the class label is the caption
        Clip("--0PQM4-hqg_000030.mp4", 0, 10, "engine accelerating, revving, vroom", "train",
             caption="engine accelerating, revving, vroom"),
        Clip("--56QUhyDQM_000185.mkv", 0, 10, "playing tennis", "train",
             caption="playing tennis"),  # another suffix
    ]
    assert result.left_out == [("-missing-id_000000.mp4", f"missing from {videos}")]

    # whole YouTube videos: the clip starts at the CSV's second
    for name in ("---g-f_I2yQ.mp4", "--0PQM4-hqg.mp4"):
        (videos / name).write_bytes(b"x")
    whole = vggsound_manifest(csv_file, videos=videos, pattern="{id}.mp4", whole_videos=True)
    assert [(c.path, c.start, c.duration, c.id) for c in whole.clips] == [
        ("---g-f_I2yQ.mp4", 1, 10, "---g-f_I2yQ.mp4@1"),
        ("--0PQM4-hqg.mp4", 30, 10, "--0PQM4-hqg.mp4@30"),
    ]
    assert len(whole.left_out) == 2
    unchecked = vggsound_manifest(csv_file, videos=videos, pattern="{id}_{start_ms}_{end_ms}.mp4",
                                  check_files=False)
    assert [c.path for c in unchecked.clips][1] == "--0PQM4-hqg_30000_40000.mp4"
    with pytest.raises(ManifestError, match=r"uses \{youtube\}.*valid fields|uses \{youtube\}"):
        vggsound_manifest(csv_file, videos=videos, pattern="{youtube}.mp4")
    csv_file.write_text("abc,1,label\n")
    with pytest.raises(ManifestError, match="line 1: VGGSound rows have 4 fields"):
        vggsound_manifest(csv_file, videos=videos)


def test_vggsound_val_split_takes_train_clips_by_video(tmp_path):
    rows = [f"vid{i:04d},{s},label,{'test' if i % 5 == 0 else 'train'}"
            for i in range(400) for s in (0, 30)]  # two clips per video
    csv_file = tmp_path / "vggsound.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    clips = vggsound_manifest(csv_file, videos=tmp_path, pattern="{id}.mp4", whole_videos=True,
                              check_files=False, val_fraction=0.25).clips
    by_video: dict[str, set[str]] = {}
    for clip in clips:
        by_video.setdefault(clip.path, set()).add(clip.split)
    assert all(len(splits) == 1 for splits in by_video.values())  # a video is never split up
    assert {next(iter(s)) for v, s in by_video.items() if int(v[3:7]) % 5 == 0} == {"test"}
    moved = sum(s == {"val"} for s in by_video.values()) / 320  # of the 320 train videos
    assert abs(moved - 0.25) < 0.08  # 3.3 binomial standard deviations of 320 draws
    with pytest.raises(ManifestError, match="fractions must lie in"):
        vggsound_manifest(csv_file, videos=tmp_path, check_files=False, val_fraction=1.5)


def test_hashed_split_is_stable_and_proportional():
    names = [f"video{i}.mp4" for i in range(4000)]
    splits = [hashed_split(n, 0.1, 0.2) for n in names]
    assert splits == [hashed_split(n, 0.1, 0.2) for n in names]
    share = Counter(splits)
    assert abs(share["val"] / 4000 - 0.1) < 0.02 and abs(share["test"] / 4000 - 0.2) < 0.02


def test_folder_layout(tmp_path):
    for name in ("dog/b.mp4", "dog/a.mkv", "cat/c.mp4", "top.mp4", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    result = folder_manifest(tmp_path, labels_from_folders=True)
    assert [(c.path, c.label, c.start, c.duration) for c in result.clips] == [
        ("cat/c.mp4", "cat", 0, None), ("dog/a.mkv", "dog", 0, None),
        ("dog/b.mp4", "dog", 0, None), ("top.mp4", None, 0, None),
    ]
    assert all(c.split is None for c in result.clips)
    split = folder_manifest(tmp_path, val_fraction=0.5, test_fraction=0.5)
    assert {c.split for c in split.clips} <= {"val", "test"}
    assert [c.split for c in split.clips] == [hashed_split(c.path, 0.5, 0.5) for c in split.clips]
    with pytest.raises(ManifestError, match="fractions"):
        folder_manifest(tmp_path, val_fraction=0.7, test_fraction=0.5)


def test_folder_windows_probe_the_files(tmp_path):
    write_video(tmp_path / "long.mp4", seconds=2.5, fps=8)
    write_video(tmp_path / "short.mp4", seconds=0.5, fps=8)
    write_broken(tmp_path / "bad", seconds=1.0)
    result = folder_manifest(tmp_path, window=1.0, hop=0.5)
    assert [(c.path, c.start, c.duration) for c in result.clips if c.path == "long.mp4"] == [
        ("long.mp4", 0, 1.0), ("long.mp4", 0.5, 1.0), ("long.mp4", 1.0, 1.0), ("long.mp4", 1.5, 1.0),
    ]
    left_out = dict(result.left_out)
    assert "shorter than the window of 1 s" in left_out["short.mp4"]
    assert "is empty" in left_out["bad/broken_empty.mp4"]
    assert "not a media file" in left_out["bad/broken_not_media.mp4"]
    assert "truncated" in left_out["bad/broken_truncated.mp4"]
    assert "shorter than the window" in left_out["bad/broken_too_short.mp4"]
    # whole files that probe fine are kept: their problems show at extraction
    assert {"bad/broken_no_audio.mp4", "bad/broken_no_video.mp4"} <= {c.path for c in result.clips}
    assert {c.path for c in result.clips} | set(left_out) == {
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.mp4")}


def test_music_layout(tmp_path):
    videos = tmp_path / "MUSIC"
    solo = tmp_path / "MUSIC_solo_videos.json"
    duet = tmp_path / "MUSIC_duet_videos.json"
    solo.write_text(json.dumps({"version": 1.0, "videos": {
        "accordion": ["iB17xqmFw3A", "QaOUijKCqZU"], "acoustic_guitar": ["M3dekVSwNjY"]}}))
    duet.write_text(json.dumps({"version": 1.0, "videos": {"flute violin": ["8DHG_hVSw1o"]}}))
    for label in ("accordion", "acoustic_guitar", "flute violin"):
        (videos / label).mkdir(parents=True)
    write_video(videos / "accordion" / "iB17xqmFw3A.mp4", seconds=2.0, fps=8)
    write_video(videos / "acoustic_guitar" / "M3dekVSwNjY.mp4", seconds=1.0, fps=8)
    write_video(videos / "flute violin" / "8DHG_hVSw1o.mkv", seconds=1.0, fps=8)

    result = music_manifest([solo, duet], videos=videos)
    assert [(c.path, c.label, c.start) for c in result.clips] == [
        ("accordion/iB17xqmFw3A.mp4", "accordion", 0),
        ("acoustic_guitar/M3dekVSwNjY.mp4", "acoustic_guitar", 0),
        ("flute violin/8DHG_hVSw1o.mkv", "flute violin", 0),
    ]
    assert result.left_out == [("accordion/QaOUijKCqZU.mp4", f"missing from {videos}")]

    cut = music_manifest([solo], videos=videos, window=0.5, val_fraction=0.5)
    per_video = {}
    for clip in cut.clips:
        per_video.setdefault(clip.path, set()).add(clip.split)
    assert [len(s) for s in per_video.values()] == [1, 1]  # every window of a video in one split
    assert Counter(c.path for c in cut.clips) == {"accordion/iB17xqmFw3A.mp4": 4,
                                                  "acoustic_guitar/M3dekVSwNjY.mp4": 2}
    assert per_video["accordion/iB17xqmFw3A.mp4"] == {hashed_split("iB17xqmFw3A", 0.5, 0)}

    flat = music_manifest([duet], videos=videos, pattern="{id}.mp4", check_files=False)
    assert [c.path for c in flat.clips] == ["8DHG_hVSw1o.mp4"]
    solo.write_text(json.dumps({"accordion": ["x"]}))
    with pytest.raises(ManifestError, match="is not a MUSIC video list"):
        music_manifest([solo], videos=videos)


def test_manifest_command(tmp_path, capsys):
    for name in ("dog/a.mp4", "cat/b.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    out = tmp_path / "m.jsonl"
    assert main(["manifest", "folder", str(tmp_path), "--labels", "-o", str(out)]) == 0
    assert [(c.path, c.label) for c in read_manifest(out)] == [("cat/b.mp4", "cat"), ("dog/a.mp4", "dog")]
    assert f"data.root={tmp_path}" in capsys.readouterr().out
    assert main(["manifest", "folder", str(tmp_path), "-o", str(out)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err

    csv_file = tmp_path / "vggsound.csv"
    csv_file.write_text("aaa,1,dog,train\nbbb,2,cat,test\n")
    (tmp_path / "aaa_000001.mp4").write_bytes(b"x")
    out = tmp_path / "vgg.csv"
    assert main(["manifest", "vggsound", str(csv_file), "--videos", str(tmp_path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 clips written" in printed and "1 left out" in printed and "bbb_000002.mp4" in printed
    assert read_manifest(out) == [Clip("aaa_000001.mp4", 0, 10, "dog", "train", caption="dog")]
    listing = tmp_path / "vgg.csv.left_out.tsv"
    assert listing.read_text() == f"bbb_000002.mp4\tmissing from {tmp_path}\n"


# -- collate -----------------------------------------------------------------------------------


def item(name: str, frames: int, steps: int, k: int = 2) -> ClipItem:
    return ClipItem(
        clip=Clip(f"{name}.mp4"),
        codes=torch.randint(0, 16, (k, frames)),
        streams={"clip": FeatureSequence(torch.randn(1, steps, 4), rate=8.0),
                 "s3d": FeatureSequence(torch.randn(1, steps // 2, 6).half(), rate=3.125, start=0.08)},
        audio_features=FeatureSequence(torch.randn(1, frames, 3), rate=50.0),
        frame_rate=86.1328125,
    )


def test_collate_pads_and_masks():
    items = [item("a", 10, 8), Skipped(Clip("bad.mp4"), "bad.mp4 is empty (0 bytes)"), item("b", 7, 6)]
    batch = collate(items)
    assert isinstance(batch, Batch) and len(batch) == 2 and batch.ids == ["a.mp4", "b.mp4"]
    assert batch.codes.shape == (2, 2, 10) and batch.codes.dtype == torch.long
    assert batch.valid.tolist() == [[True] * 10, [True] * 7 + [False] * 3]
    assert torch.equal(batch.codes[1, :, :7], items[2].codes) and batch.codes[1, :, 7:].eq(0).all()
    s3d = batch.streams["s3d"]
    assert s3d.values.shape == (2, 4, 6) and s3d.values.dtype == torch.float32
    assert (s3d.rate, s3d.start) == (3.125, 0.08)
    assert s3d.mask.tolist() == [[True] * 4, [True] * 3 + [False]]
    assert batch.audio_features.values.shape == (2, 10, 3) and batch.audio_features.mask[1, 7:].sum() == 0
    assert batch.frame_rate == 86.1328125
    assert [(s.clip.path, s.reason) for s in batch.skipped] == [("bad.mp4", "bad.mp4 is empty (0 bytes)")]
    moved = batch.to("cpu")
    assert torch.equal(moved.codes, batch.codes) and moved.streams["clip"].mask is not None

    empty = collate([Skipped(Clip("x.mp4"), "x.mp4 does not exist")])
    assert len(empty) == 0 and empty.codes is None and len(empty.skipped) == 1
