"""Media decoding through PyAV (audio, video on a time grid, probing), and one-sentence errors
for bad media. Every file is written by the test itself (tests/media_fixtures.py)."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from tests.media_fixtures import (
    BROKEN_REASONS,
    frame_colour,
    frame_indices,
    tone,
    truncated_copy,
    write_audio,
    write_broken,
    write_dataset,
    write_picture,
    write_video,
)
from v2a.media import (
    WINDOW_TOLERANCE,
    MediaError,
    generated_by_v2a,
    load_audio,
    load_video,
    media_files,
    probe,
    resample_video,
)


def test_wav_round_trip_and_resampling(tmp_path):
    path = tmp_path / "a.wav"
    write_audio(path, tone(1.0, 16000, channels=2), 16000)
    wav = load_audio(path, sample_rate=16000)
    assert wav.shape == (2, 16000) and wav.dtype == torch.float32
    assert torch.allclose(wav[0], torch.from_numpy(tone(1.0, 16000)[0]).float(), atol=1e-3)
    mono = load_audio(path, sample_rate=8000, channels=1)
    assert mono.shape == (1, 8000)
    # a 440 Hz tone stays a 440 Hz tone after resampling
    spectrum = torch.fft.rfft(mono[0]).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 1


def test_window_cut(tmp_path):
    path = tmp_path / "ramp.wav"
    ramp = (np.arange(16000 * 2) / (16000 * 2))[None] * 0.9
    write_audio(path, ramp, 16000)
    window = load_audio(path, sample_rate=16000, start=0.5, duration=0.25)
    assert window.shape == (1, 4000)
    assert abs(float(window[0, 0]) - 0.9 * 0.25) < 2e-3


def test_aac_padding_is_trimmed(tmp_path):
    path = tmp_path / "a.m4a"
    write_audio(path, tone(1.0, 32000), 32000, codec="aac")
    wav = load_audio(path, sample_rate=32000)
    assert abs(wav.shape[1] - 32000) <= 1024  # not the 32768 the decoder hands back


@pytest.mark.parametrize("make, fragment", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_text("not media at all " * 100), "is not a media file"),
])
def test_bad_files_give_one_sentence(tmp_path, make, fragment):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(MediaError, match=fragment) as info:
        load_audio(path, sample_rate=16000)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_file(tmp_path):
    path = tmp_path / "t.m4a"
    write_audio(path, tone(1.0, 32000), 32000, codec="aac")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError, match=str(path)):
        load_audio(path, sample_rate=16000)


def test_media_files_walks_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    from v2a.files import temporary_path

    for name in ("b.wav", "sub/a.flac", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    temporary_path(tmp_path / "c.wav").write_bytes(b"half")  # a run writing c.wav: never a file to fit on
    found = media_files([tmp_path], (".wav", ".flac"))
    assert [p.name for p in found] == ["b.wav", "a.flac"]  # sorted by path
    with pytest.raises(MediaError, match="does not exist"):
        media_files([tmp_path / "nope"], (".wav",))


def test_audio_window_is_exact_and_a_short_file_is_refused(tmp_path):
    path = write_audio(tmp_path / "one.wav", tone(1.0, 16000), 16000)
    # ending within the tolerance: padded with silence to the exact window length
    wav = load_audio(path, sample_rate=16000, start=0.5, duration=0.5 + WINDOW_TOLERANCE / 2)
    assert wav.shape == (1, round((0.5 + WINDOW_TOLERANCE / 2) * 16000))
    assert wav[0, -100:].abs().max() == 0
    with pytest.raises(MediaError, match="shorter than the window 0.5-2 s") as info:
        load_audio(path, sample_rate=16000, start=0.5, duration=1.5)
    assert str(path) in str(info.value)
    with pytest.raises(MediaError, match="no audio after 3 s"):
        load_audio(path, sample_rate=16000, start=3.0, duration=1.0)


# -- video -------------------------------------------------------------------------------------


def shown_at(times: list[float], t: float) -> int:
    """Index of the source frame on screen at ``t``: the last one not after ``t``."""
    return max(i for i, s in enumerate(times) if s <= t + 1e-9)


@pytest.mark.parametrize("target_fps", [4.0, 10.0, 25.0])
def test_frames_on_the_target_grid_show_the_frame_of_their_time(tmp_path, target_fps):
    path = write_video(tmp_path / "a.mp4", seconds=2.0, fps=10, audio=True)  # x264 with B-frames
    video = load_video(path, fps=target_fps)
    n = round(2.0 * target_fps)
    grid = torch.arange(n, dtype=torch.float64) / target_fps
    assert video.frames.shape == (n, 3, 32, 32) and video.frames.dtype == torch.float32
    assert 0 <= float(video.frames.min()) and float(video.frames.max()) <= 1
    assert torch.allclose(video.times, grid) and video.fps == target_fps
    source = [i / 10 for i in range(20)]
    expected = [shown_at(source, float(t)) for t in grid]
    assert frame_indices(video.frames) == expected
    shown = torch.tensor([source[i] for i in expected], dtype=torch.float64)
    assert torch.allclose(video.frame_times, shown)
    raw = load_video(path, fps=target_fps, dtype=torch.uint8).frames
    assert raw.dtype == torch.uint8 and torch.equal(raw.float() / 255, video.frames)


def test_variable_frame_rate_uses_real_timestamps(tmp_path):
    source = [0.0, 0.1, 0.35, 0.4, 0.9, 1.3]  # gaps and a burst
    path = write_video(tmp_path / "vfr.mp4", times=source, fps=10)
    video = load_video(path, fps=10)
    grid = [i / 10 for i in range(14)]  # the last frame lasts a nominal 0.1 s: ends at 1.4
    assert torch.allclose(video.times, torch.tensor(grid, dtype=torch.float64))
    expected = [shown_at(source, t) for t in grid]
    assert expected[:5] == [0, 1, 1, 1, 3]  # 0.3 s still shows the frame of 0.1 s
    assert frame_indices(video.frames) == expected
    assert video.frame_times.tolist() == pytest.approx([source[i] for i in expected], abs=1e-3)


class CountingContainer:
    """Wraps a PyAV input container and counts the video frames it decodes."""

    def __init__(self, container):
        self.container, self.decoded = container, 0

    def __getattr__(self, name):
        return getattr(self.container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.container.__exit__(*exc)

    def decode(self, *args, **kwargs):
        for frame in self.container.decode(*args, **kwargs):
            self.decoded += 1
            yield frame


def test_window_cut_seeks_instead_of_decoding_from_the_start(tmp_path, monkeypatch):
    path = write_video(tmp_path / "long.mp4", seconds=12.0, fps=10, options={"g": "10"})
    import v2a.media.decode

    opened: list[CountingContainer] = []
    real_open = v2a.media.decode.open_media

    def counting_open(p):
        opened.append(CountingContainer(real_open(p)))
        return opened[-1]

    monkeypatch.setattr(v2a.media.decode, "open_media", counting_open)
    video = load_video(path, fps=5, start=9.3, duration=1.0, size=16)
    grid = 9.3 + torch.arange(5, dtype=torch.float64) / 5
    assert torch.allclose(video.times, grid) and video.start == pytest.approx(9.3)
    assert video.duration == pytest.approx(1.0)
    source = [i / 10 for i in range(120)]
    assert frame_indices(video.frames) == [shown_at(source, float(t)) for t in grid]
    assert opened[0].decoded < 30  # from the key frame at 9.0 s, not the 93 frames before 9.3 s


def test_odd_sizes_resize_the_shorter_side_and_crop_the_centre(tmp_path):
    def bands(i):  # left quarter red, middle half the frame's colour, right quarter blue
        image = np.empty((17, 33, 3), np.uint8)
        image[:] = frame_colour(i)
        image[:, :8] = (232, 24, 24)
        image[:, 25:] = (24, 24, 232)
        return image

    path = write_video(tmp_path / "odd.mp4", width=33, height=17, seconds=0.5, image=bands)  # mpeg4
    native = load_video(path, fps=10)
    assert native.frames.shape == (5, 3, 17, 33)
    square = load_video(path, fps=10, size=8)  # 33x17 -> 16x8 -> centre 8x8: only the middle
    assert square.frames.shape == (5, 3, 8, 8)
    assert frame_indices(square.frames) == [0, 1, 2, 3, 4]
    wide = load_video(path, fps=10, size=(4, 12))  # (h, w): covers 12 wide, crops the height
    assert wide.frames.shape == (5, 3, 4, 12)
    assert float(wide.frames[0, 0, :, 0].mean()) > 0.8  # the red band, left
    assert float(wide.frames[0, 2, :, -1].mean()) > 0.8  # the blue band, right


@pytest.mark.parametrize("suffix, pix_fmt, gray", [
    (".mkv", "gray", True),  # ffv1
    (".mp4", "yuv444p", False),
    (".mp4", "yuvj420p", False),
    (".mp4", "yuv420p10le", False),
    (".webm", "yuv420p", False),  # vp9
    (".avi", "yuv420p", False),  # mpeg4
])
def test_pixel_formats_come_out_as_rgb(tmp_path, suffix, pix_fmt, gray):
    path = write_video(tmp_path / f"v{suffix}", seconds=0.6, fps=10, width=18, height=14,
                       pix_fmt=pix_fmt)
    video = load_video(path, fps=10)
    assert video.frames.shape == (6, 3, 14, 18)
    assert frame_indices(video.frames, gray=gray) == list(range(6))
    if gray:
        assert torch.allclose(video.frames[:, 0], video.frames[:, 2])


def halves(i):
    """32 wide x 16 tall: left half red, right half blue."""
    image = np.empty((16, 32, 3), np.uint8)
    image[:, :16] = (232, 24, 24)
    image[:, 16:] = (24, 24, 232)
    return image


@pytest.mark.parametrize("rotation, top_left, bottom_right", [
    (0, "red", "blue"),
    (90, "blue", "red"),  # counter-clockwise: the left half ends at the bottom
    (-90, "red", "blue"),  # clockwise (a phone held upright): the left half ends on top
    (180, "blue", "red"),
])
def test_rotation_metadata_turns_frames_upright(tmp_path, rotation, top_left, bottom_right):
    path = write_video(tmp_path / "r.mp4", width=32, height=16, seconds=0.3, image=halves,
                       rotation=rotation)
    info = probe(path)
    upright = rotation in (90, -90)
    assert info.rotation == rotation
    assert (info.width, info.height) == ((16, 32) if upright else (32, 16))
    frames = load_video(path, fps=10).frames
    assert frames.shape[2:] == ((32, 16) if upright else (16, 32))
    colour = lambda pixel: "red" if pixel[0] > pixel[2] else "blue"  # noqa: E731
    assert colour(frames[0, :, 1, 1]) == top_left and colour(frames[0, :, -2, -2]) == bottom_right
    assert load_video(path, fps=10, size=(8, 6)).frames.shape[2:] == (8, 6)


QUADRANT_COLOURS = {
    "red": (232, 24, 24), "blue": (24, 24, 232), "green": (24, 232, 24), "gray": (128, 128, 128),
}


def quadrants(i):
    """32 wide x 16 tall: red, blue on top; green, gray below."""
    image = np.empty((16, 32, 3), np.uint8)
    image[:8, :16], image[:8, 16:] = QUADRANT_COLOURS["red"], QUADRANT_COLOURS["blue"]
    image[8:, :16], image[8:, 16:] = QUADRANT_COLOURS["green"], QUADRANT_COLOURS["gray"]
    return image


def corner_names(frame) -> list[str]:
    """Colour names of the corners of ``frame [3, h, w]``: TL, TR, BL, BR."""
    names = []
    for y, x in ((1, 1), (1, -2), (-2, 1), (-2, -2)):
        pixel = np.asarray(frame[:, y, x]) * 255
        distance = {n: np.abs(np.array(c) - pixel).sum() for n, c in QUADRANT_COLOURS.items()}
        names.append(min(distance, key=distance.get))
    return names


@pytest.mark.parametrize("rotation, hflip, vflip", [
    (0, True, False), (90, True, False), (0, False, True), (-90, False, True),
])
def test_mirroring_display_matrices_are_applied_like_ffmpeg(tmp_path, rotation, hflip, vflip):
    # PyAV's set_display_rotation: turn counter-clockwise by `rotation`, then mirror
    expected = np.rot90(quadrants(0), k=rotation // 90)
    expected = expected[:, ::-1] if hflip else expected
    expected = expected[::-1] if vflip else expected
    path = tmp_path / "m.mp4"
    with av.open(str(path), "w") as out:  # write_video has no flips: the stream is set up here
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        stream.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(quadrants(i), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    frames = load_video(path, fps=10).frames
    want = torch.from_numpy(np.ascontiguousarray(expected)).permute(2, 0, 1).float() / 255
    assert frames.shape[1:] == want.shape
    assert corner_names(frames[0]) == corner_names(want)
    assert probe(path).mirrored


def test_probe_describes_streams(tmp_path):
    path = write_video(tmp_path / "a.mp4", seconds=1.5, fps=12, width=40, height=24, audio=True,
                       sample_rate=22050, channels=2)
    info = probe(path)
    assert info.has_video and info.has_audio and info.path == path
    assert info.fps == pytest.approx(12) and (info.width, info.height, info.rotation) == (40, 24, 0)
    assert info.duration == pytest.approx(1.5, abs=0.05)
    assert info.video_duration == pytest.approx(1.5, abs=0.01)
    assert (info.sample_rate, info.audio_channels) == (22050, 2)
    silent = probe(write_video(tmp_path / "b.mkv", seconds=0.5, fps=10))
    assert not silent.has_audio and silent.sample_rate is None
    assert silent.duration == pytest.approx(0.5)
    sound = probe(write_audio(tmp_path / "c.wav", tone(0.25, 8000), 8000))
    assert not sound.has_video and sound.has_audio and sound.fps is None
    assert sound.duration == pytest.approx(0.25, abs=1e-3)


def test_video_and_audio_of_one_window_line_up(tmp_path):
    path = write_video(tmp_path / "av.mp4", seconds=3.0, fps=10, audio=True, sample_rate=16000)
    video = load_video(path, fps=8, start=1.0, duration=1.5, size=16)
    audio = load_audio(path, sample_rate=16000, start=1.0, duration=1.5)
    assert video.frames.shape[0] == 12 and audio.shape == (1, 24000)
    expected = torch.from_numpy(tone(3.0, 16000)[0, 16000:40000]).float()
    assert torch.allclose(audio[0], expected, atol=0.02)  # AAC is lossy; the phase lines up


# -- bad media ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return write_broken(tmp_path_factory.mktemp("broken"), seconds=2.0)


@pytest.mark.parametrize("kind", ["empty", "not_media", "truncated", "no_video", "too_short"])
def test_bad_video_files_give_one_sentence(broken, kind):
    path = broken[kind]
    with pytest.raises(MediaError, match=BROKEN_REASONS[kind]) as info:
        load_video(path, fps=8, duration=2.0)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_a_training_clip_without_audio_is_refused(broken):
    path = broken["no_audio"]
    assert load_video(path, fps=8, duration=2.0).num_frames == 16  # a good video...
    with pytest.raises(MediaError, match=BROKEN_REASONS["no_audio"]) as info:
        load_audio(path, sample_rate=16000, duration=2.0)  # ...but not a training clip
    assert str(path) in str(info.value)
    with pytest.raises(MediaError, match=BROKEN_REASONS["too_short"]):
        load_audio(broken["too_short"], sample_rate=16000, duration=2.0)


def test_truncated_file_with_a_header(tmp_path):
    source = write_video(tmp_path / "full.mkv", seconds=3.0, fps=10, audio=True)
    path = truncated_copy(source, tmp_path / "cut.mkv", keep=0.5)
    assert load_video(path, fps=10, duration=1.0).num_frames == 10  # the intact part decodes
    for kwargs in ({}, {"start": 1.0, "duration": 2.0}):
        with pytest.raises(MediaError, match=r"is truncated: its header says 3.00 s") as info:
            load_video(path, fps=10, **kwargs)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_mp4_with_its_index_first(tmp_path):
    source = write_video(tmp_path / "full.mp4", seconds=3.0, fps=10, audio=True, faststart=True)
    path = truncated_copy(source, tmp_path / "cut.mp4", keep=0.4)
    with pytest.raises(MediaError, match="is truncated") as info:
        load_video(path, fps=10, duration=3.0)
    assert str(path) in str(info.value)
    with pytest.raises(MediaError, match="is truncated") as info:
        load_audio(path, sample_rate=16000, duration=3.0)
    assert str(path) in str(info.value)


def test_window_past_the_end_and_within_the_tolerance(tmp_path):
    path = write_video(tmp_path / "a.mp4", seconds=1.0, fps=10)
    held = load_video(path, fps=10, start=0.5, duration=0.5 + WINDOW_TOLERANCE * 0.9)
    assert held.num_frames == round((0.5 + WINDOW_TOLERANCE * 0.9) * 10)
    assert frame_indices(held.frames)[-1] == 9  # the last frame held over the gap
    with pytest.raises(MediaError, match=r"lasts 1.00 s, shorter than the window 0.5-2 s"):
        load_video(path, fps=10, start=0.5, duration=1.5)
    with pytest.raises(MediaError, match="shorter than the window starting at 4 s"):
        load_video(path, fps=10, start=4.0)
    with pytest.raises(ValueError):
        load_video(path, fps=0)


def test_dataset_fixture_writes_distinct_clips_with_sound(tmp_path):
    paths = write_dataset(tmp_path / "clips", 3, seconds=1.0, fps=8)
    assert [p.name for p in paths] == ["clip000.mp4", "clip001.mp4", "clip002.mp4"]
    firsts = []
    for k, path in enumerate(paths):
        info = probe(path)
        assert info.has_audio and info.duration == pytest.approx(1.0, abs=0.1)
        firsts.append(frame_indices(load_video(path, fps=8, duration=1.0).frames[:1])[0])
        spectrum = torch.fft.rfft(load_audio(path, sample_rate=16000, duration=1.0)[0]).abs()
        assert abs(int(spectrum.argmax()) - (220 + 55 * k)) <= 2
    assert firsts == [0, 17, 34]


def test_a_cover_picture_is_not_a_video(tmp_path):
    path = tmp_path / "song.mp4"
    with av.open(str(path), "w") as out:  # a song with cover art: its "video" is one picture
        sound = out.add_stream("aac", rate=16000, layout="mono")
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 16, 16, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 100, np.uint8), format="rgb24")
        picture.pts = 0
        out.mux(cover.encode(picture))
        out.mux(cover.encode(None))
        wave = tone(1.0, 16000).astype(np.float32)
        for i in range(0, wave.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(wave[:, i:i + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    assert not probe(path).has_video and probe(path).has_audio
    with pytest.raises(MediaError, match=r"has no video stream \(it holds only audio and a cover"):
        load_video(path, fps=8)
    assert load_audio(path, sample_rate=16000).shape[1] == pytest.approx(16000, abs=1024)


class WatchedFrame:
    """A decoded frame that records the size of every picture made from it."""

    def __init__(self, frame, log):
        self.frame, self.log = frame, log

    def __getattr__(self, name):
        return getattr(self.frame, name)

    def reformat(self, *args, **kwargs):
        converted = self.frame.reformat(*args, **kwargs)
        self.log.append((converted.width, converted.height))
        return converted

    def to_ndarray(self, *args, **kwargs):
        self.log.append((self.frame.width, self.frame.height))
        return self.frame.to_ndarray(*args, **kwargs)


class WatchedReformatter:
    """PyAV's scaler, recording the sizes it makes."""

    real = av.video.reformatter.VideoReformatter

    def __init__(self, log):
        self.reformatter, self.log = self.real(), log

    def reformat(self, frame, *args, **kwargs):
        frame = frame.frame if isinstance(frame, WatchedFrame) else frame
        converted = self.reformatter.reformat(frame, *args, **kwargs)
        self.log.append((converted.width, converted.height))
        return converted


def test_frames_are_resized_as_they_are_decoded(tmp_path, monkeypatch):
    import v2a.media.decode

    path = write_video(tmp_path / "big.mp4", seconds=1.0, fps=20, width=320, height=240,
                       options={"preset": "ultrafast"})
    sizes: list[tuple[int, int]] = []
    real_open = v2a.media.decode.open_media

    def watched_open(p):
        container = CountingContainer(real_open(p))
        decode = container.decode
        container.decode = lambda *a, **k: (WatchedFrame(f, sizes) for f in decode(*a, **k))
        return container

    monkeypatch.setattr(v2a.media.decode, "open_media", watched_open)
    monkeypatch.setattr(av.video.reformatter, "VideoReformatter", lambda: WatchedReformatter(sizes))
    video = load_video(path, fps=20, size=32)
    assert video.frames.shape == (20, 3, 32, 32)
    assert frame_indices(video.frames) == list(range(20))
    assert len(sizes) == 20 and set(sizes) == {(43, 32)}  # 320x240 → 43x32 by the scaler


def decode_after_collecting(path: str) -> None:
    import gc
    import sys

    gc.collect()  # frees what the parent left in reference cycles: must not wait for its threads
    sys.exit(0 if load_video(path, fps=10, size=16).num_frames == 10 else 3)


def test_a_forked_worker_decodes_after_the_parent_did(tmp_path):
    """DataLoader workers are forked: FFmpeg thread pools inherited from the parent (decoder,
    scaler) would deadlock the child when it frees them, since their threads are not copied."""
    import gc
    import multiprocessing

    path = write_video(tmp_path / "a.mp4", seconds=1.0, fps=10, width=64, height=48)
    gc.disable()
    try:
        errors = []
        for _ in range(2):
            load_video(path, fps=10, size=16)
            with pytest.raises(MediaError) as info:
                load_video(path, fps=10, size=16, duration=100)
            errors.append(info.value)  # tracebacks keep the decoder's objects alive
        cycle = [errors]
        cycle.append(cycle)
        del cycle, errors, info
        child = multiprocessing.get_context("fork").Process(target=decode_after_collecting,
                                                            args=(str(path),))
        child.start()
        child.join(30)
        if child.exitcode is None:
            child.kill()
        assert child.exitcode == 0
    finally:
        gc.enable()


def test_write_video_round_trip_and_atomic_failure(tmp_path):
    from v2a.media import load_video, probe, write_video

    frames = np.zeros((20, 16, 24, 3), dtype=np.uint8)
    frames[10:, ..., 0] = 255  # red from frame 10 (0.4 s at 25 fps)
    sr = 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(0.8 * sr)) / sr))[None]
    out = write_video(tmp_path / "v.mp4", frames, 25.0, audio, sr)
    info = probe(out)
    assert info.has_video and info.has_audio and (info.width, info.height) == (24, 16)
    video = load_video(out, fps=25.0)
    assert video.num_frames == 20
    assert float(video.frames[5, 0].mean()) < 0.1 and float(video.frames[15, 0].mean()) > 0.9
    assert abs(load_audio(out, sample_rate=sr).shape[1] - audio.shape[1]) < sr // 50
    with pytest.raises(ValueError, match="even frame sizes"):
        write_video(tmp_path / "odd.mp4", np.zeros((3, 15, 16, 3), dtype=np.uint8), 25.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # no half file, no temp left


# -- still pictures, windows, late clocks ----------------------------------------------------------


@pytest.mark.parametrize("make", ["png", "jpeg", "one_frame"])
def test_a_still_picture_is_not_a_video(tmp_path, make):
    """A PNG or JPEG renamed .mp4, or a video of one frame, has nothing to give sound to: said
    in one sentence up front (before, probe gave it a length of 0 s, or 0.1 s)."""
    path = tmp_path / "photo.mp4"
    if make == "one_frame":
        write_video(path, seconds=0.1, fps=10)
    else:
        write_picture(path, codec={"png": "png", "jpeg": "mjpeg"}[make])
    with pytest.raises(MediaError, match=r"photo\.mp4 holds one still picture \(\w+\), not a "
                       r"video") as exc:
        probe(path)
    assert "\n" not in str(exc.value)
    assert probe(write_video(tmp_path / "two.mp4", seconds=0.2, fps=10)).duration == 0.2


def test_a_bad_window_is_the_users_mistake_and_a_bad_rate_a_bug(tmp_path):
    path = write_video(tmp_path / "a.mp4", seconds=1.0, fps=10)
    with pytest.raises(MediaError, match=r"a\.mp4 must start at or after 0 s and last a positive "
                       r"time, not start at -0.5 s"):
        load_video(path, fps=10, start=-0.5)
    with pytest.raises(MediaError, match="lasting 0 s"):
        load_video(path, fps=10, duration=0.0)
    video = load_video(path, fps=10)
    with pytest.raises(MediaError, match="a window of the frames must start at or after 0 s"):
        resample_video(video, fps=5, start=0.2, duration=-1.0)
    with pytest.raises(ValueError, match="fps must be positive") as exc:
        resample_video(video, fps=0)
    assert not isinstance(exc.value, MediaError)


def test_an_mpeg_ts_clock_starting_late_is_read_from_its_start(tmp_path):
    """An MPEG-TS file's timestamps start where its recording's clock stood; players show that
    moment as 0, and so do v2a's times, whether a window is read or the whole file."""
    path = write_video(tmp_path / "a.ts", seconds=3.0, fps=10, width=32, height=32, audio=True,
                       audio_codec="aac", sample_rate=16000)
    with av.open(str(path)) as container:
        origin = container.start_time / av.time_base
        stream = container.streams.video[0]
        video_start = float(stream.start_time * stream.time_base) - origin
    # the clock starts late; the video a little after it, where the sound's encoder delay ends
    assert origin > 0.1 and 0 <= video_start < 0.1
    whole = load_video(path, fps=10)
    # grid time 0.2 s shows frame 1, on screen from 0.1 s after the video starts
    assert float(whole.frame_times[2]) == pytest.approx(video_start + 0.1, abs=1e-4)  # 90 kHz
    window = load_video(path, fps=10, start=1.0, duration=1.5)
    assert torch.equal(window.frames, whole.frames[10:25])
    sound = load_audio(path, sample_rate=16000)
    cut = load_audio(path, sample_rate=16000, start=1.0, duration=1.5)
    # the same packets through the same decoder; the window's decoding starts 0.5 s earlier
    # (AUDIO_PREROLL), past any overlap it could lack: equal up to float rounding
    assert torch.allclose(cut, sound[:, 16000:40000], atol=1e-5)


def test_what_v2a_writes_says_so(tmp_path):
    from v2a.media import write_audio as write_generated

    for suffix in (".wav", ".flac"):
        assert generated_by_v2a(write_generated(tmp_path / f"a{suffix}", tone(0.2, 8000), 8000))
    assert not generated_by_v2a(write_audio(tmp_path / "user.wav", tone(0.2, 8000), 8000))
    assert not generated_by_v2a(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio")
    assert not generated_by_v2a(tmp_path / "text.wav")
