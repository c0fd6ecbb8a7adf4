"""The synthetic sync benchmark: generation, files, determinism, and that the written audio
scores perfectly against its own events (the scoring functions are tested in
tests/test_metrics.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from v2a.cli import main
from v2a.manifests import read_manifest
from v2a.media import load_audio, load_video, probe
from v2a.metrics.onsets import score_clip
from v2a.synth import (
    CLASSES,
    FUNDAMENTALS,
    MIN_GAP,
    floor_row,
    read_events,
    synth_clip,
    write_synth,
)

SR = 16000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synth(out, 10, seed=7)
    return out


# -- the written dataset -------------------------------------------------------------------------


def test_round_trip_scores_the_written_audio_against_its_events(dataset):
    clips = read_manifest(dataset / "manifest.csv")
    events = read_events(dataset / "events.jsonl")
    assert len(clips) == 10 and set(events) == {c.id for c in clips}
    f1s, accuracies, offsets = [], [], []
    for clip in clips:
        wav = load_audio(clip.resolve(dataset), sample_rate=SR).numpy()
        assert wav.shape == (1, 4 * SR)
        result = score_clip(wav, SR, events[clip.id], fundamentals=FUNDAMENTALS)
        f1s.append(result["onset_f1"])
        accuracies.append(result["class_accuracy"])
        offsets.append(result["onset_offset"])
    assert np.mean(f1s) >= 0.95
    assert np.mean(accuracies) >= 0.95
    assert np.nanmean(offsets) < 0.01


def test_manifest_and_events_describe_each_clip(dataset):
    clips = read_manifest(dataset / "manifest.csv")
    names = {c.name for c in CLASSES}
    for k, clip in enumerate(clips):
        assert (dataset / clip.path).is_file()
        assert clip.start == 0 and clip.duration == 4 and clip.split == "train"
        truth = synth_clip(7, k)
        assert clip.label == "+".join(o.cls.name for o in truth.objects)
        written = read_events(dataset / "events.jsonl")[clip.id]
        assert written == truth.events
        times = [e.time for e in written]
        assert all(e.cls in names for e in written)
        assert np.all(np.diff(times) >= MIN_GAP - 1e-6)
        assert 0 < times[0] and times[-1] < 4


def nearest(rgb) -> str:
    """The class (or "background"/"floor") whose colour is nearest to a decoded pixel."""
    palette = {c.name: c.colour for c in CLASSES} | {"background": (30,) * 3, "floor": (90,) * 3}
    return min(palette, key=lambda n: np.abs(np.asarray(rgb, float) - palette[n]).sum())


def test_video_shows_bounces_touching_the_floor_and_flashes_at_event_frames(dataset):
    size, fps = 64, 25
    floor = floor_row(size)
    seen = set()
    for k in range(10):
        truth = synth_clip(7, k)
        video = load_video(dataset / f"clip{k:04d}.mp4", fps=fps)
        frames = (video.frames.permute(0, 2, 3, 1).numpy() * 255)  # [t, h, w, 3]
        assert frames.shape == (100, size, size, 3)
        for obj in truth.objects:
            seen.add(obj.motion)
            x = obj.column
            for f in obj.frames:
                if obj.motion == "bounce":
                    # the object rests on the floor: colour just above the floor line
                    y = floor - 2
                    assert nearest(frames[f, y, x]) == obj.cls.name, (k, f)
                else:
                    lit = frames[f, :floor, x - 2:x + 3].reshape(-1, 3)
                    quiet = next(g for g in range(100) if not any(0 <= g - e <= 2
                                                                   for e in obj.frames))
                    dim = frames[quiet, :floor, x - 2:x + 3].reshape(-1, 3)
                    assert obj.cls.name in {nearest(p) for p in lit}, (k, f)
                    assert lit.sum(axis=1).max() > dim.sum(axis=1).max() * 1.5
    assert seen == {"bounce", "flash"}


def test_bouncing_object_is_in_the_air_between_events():
    floor = floor_row(64)
    bouncers = [(synth_clip(7, k), o) for k in range(10) for o in synth_clip(7, k).objects
                if o.motion == "bounce"]
    assert bouncers
    clip, obj = bouncers[0]
    a, b = obj.frames[0], obj.frames[1]
    mid = (a + b) // 2
    y = floor - 2
    colour = np.array(obj.cls.colour)
    assert np.abs(clip.frames[a, y, obj.column].astype(int) - colour).max() < 5
    assert np.abs(clip.frames[mid, y, obj.column].astype(int) - colour).max() > 60


def test_same_seed_same_dataset_and_another_seed_differs(dataset, tmp_path):
    again = write_synth(tmp_path / "again", 2, seed=7)
    assert (again / "events.jsonl").read_text().splitlines() == \
        [line for line in (dataset / "events.jsonl").read_text().splitlines()
         if json.loads(line)["clip"] in ("clip0000.mp4", "clip0001.mp4")]
    for name in ("clip0000.mp4", "clip0001.mp4"):
        a = load_audio(dataset / name, sample_rate=SR).numpy()
        b = load_audio(again / name, sample_rate=SR).numpy()
        np.testing.assert_array_equal(a, b)
    one, two = synth_clip(7, 0), synth_clip(7, 0)
    np.testing.assert_array_equal(one.audio, two.audio)
    np.testing.assert_array_equal(one.frames, two.frames)
    assert synth_clip(8, 0).events != one.events


# -- command line --------------------------------------------------------------------------------


def test_cli_writes_the_dataset(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["synth", "--out", str(out), "--clips", "2", "--seed", "1",
                 "--seconds", "2", "--fps", "10", "--size", "32"]) == 0
    assert {p.name for p in out.iterdir()} == {"clip0000.mp4", "clip0001.mp4",
                                                "manifest.csv", "events.jsonl", "captions.csv"}
    video = load_video(out / "clip0000.mp4", fps=10)
    assert tuple(video.frames.shape) == (20, 3, 32, 32)
    assert main(["synth", "--out", str(out), "--clips", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert probe(out / "clip0000.mp4").has_audio
    silent = tmp_path / "silent"
    assert main(["synth", "--out", str(silent), "--clips", "1", "--seconds", "2", "--silent"]) == 0
    info = probe(silent / "clip0000.mp4")
    assert info.has_video and not info.has_audio
    assert (silent / "events.jsonl").read_text().strip()  # the truth stays


@pytest.mark.parametrize("option", [["--clips", "0"], ["--clips", "1", "--size", "33"],
                                    ["--clips", "1", "--seconds", "0.5"],
                                    ["--clips", "1", "--sample-rate", "4000"]])
def test_cli_bad_options_give_one_sentence(tmp_path, capsys, option):
    assert main(["synth", "--out", str(tmp_path / "x"), *option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("v2a: error: --") and "\n" not in err
    assert not (tmp_path / "x").exists()
