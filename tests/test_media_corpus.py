"""Every video of the corpus (:data:`tests.media_fixtures.CORPUS`: containers, codecs and timings
met in the wild) gets sound with every frame intact: through :func:`v2a.media.mux_audio`, and
through `v2a generate` with the bundled tiny model (offline, about a second per clip).

For each case the output decodes as many video frames as the input, showing the same pictures
(the fixtures' colour code) at the same times, from the file's start (an MPEG-TS clock starting
late is moved to 0, as players show it), within one tick of the input's time base: frames that
share a timestamp are set a fraction of a tick apart. The video ends where the input's does and
the sound lasts as long, within one AAC frame. A copied stream keeps its packets' bytes; a
re-encoded one its display matrix.
"""

from __future__ import annotations

import os
import re

import av
import pytest

from tests.media_fixtures import (
    CORPUS,
    CorpusCase,
    frame_index,
    tone,
    write_audio,
    write_corpus,
    write_picture,
    write_video,
)
from v2a.cli import main
from v2a.media import MediaError, generated_by_v2a, load_audio, mux_audio, plan_mux, probe

SR = 16000  # the tiny model's sample rate, used for the direct muxes too
AAC_FRAME = 1024 / SR  # seconds of one AAC frame: how finely an AAC track's length can be set
CASES = {case.name: case for case in CORPUS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def shown_frames(path, *, gray: bool) -> tuple[list[tuple[float, int]], float]:
    """(time from the file's start, colour index) of each frame of the first video stream, and
    the seconds of one tick of its time base."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = max(0, container.start_time or 0) / av.time_base
        frames = [(float(frame.time) - origin,
                   frame_index(frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0),
                               gray=gray))
                  for frame in container.decode(stream)]
        return frames, float(stream.time_base)


def video_end(path) -> float:
    """Seconds from the file's start to the end of its first video stream, as the mp4 says."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float((stream.start_time + stream.duration) * stream.time_base)


def video_packets(path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


def nal_units(packet: bytes, *, annex_b: bool) -> list[bytes]:
    """The H.264 NAL units of one packet: split at start codes (MPEG-TS) or 4-byte lengths (mp4)."""
    if annex_b:
        return [unit for unit in re.split(b"\x00\x00\x00\x01|\x00\x00\x01", packet) if unit]
    units, at = [], 0
    while at < len(packet):
        size = int.from_bytes(packet[at:at + 4], "big")
        units.append(packet[at + 4:at + 4 + size])
        at += 4 + size
    return units


def check_output(case: CorpusCase, source, out, *, copied: bool) -> None:
    """The promises of the module docstring, for ``out`` written from ``source``."""
    wanted, tick = shown_frames(source, gray=case.gray)
    got, _ = shown_frames(out, gray=case.gray)
    assert len(got) == len(wanted)
    assert [index for _, index in got] == [index for _, index in wanted]
    # a tick of the input's clock (1e-9: seconds from two time bases' fractions as floats)
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, wanted)) <= tick + 1e-9
    end = video_end(out)
    assert end == pytest.approx(case.end, abs=tick + 1e-9)
    assert abs(probe(out).audio_duration - end) <= AAC_FRAME
    before, after = probe(source), probe(out)
    assert (after.rotation, after.mirrored) == (before.rotation, before.mirrored)
    if copied:
        assert (after.width, after.height) == (before.width, before.height)
        if case.name.endswith(".ts"):  # mp4 stores H.264 with lengths, not start codes
            assert ([nal_units(p, annex_b=False) for p in video_packets(out)]
                    == [nal_units(p, annex_b=True) for p in video_packets(source)])
        else:
            assert video_packets(out) == video_packets(source)
    else:  # yuv420p needs even sizes: an odd one gains a pixel
        assert (after.width, after.height) == (before.width + before.width % 2,
                                               before.height + before.height % 2)
    assert generated_by_v2a(out) and not generated_by_v2a(source)


@pytest.mark.parametrize("name", CASES)
def test_the_plan_is_known_up_front(corpus, name):
    case, source = CASES[name], corpus[name]
    plan = plan_mux(source, source.with_name("out.mp4"))
    assert plan.copy_video == case.copies
    assert plan.duration == pytest.approx(case.end, abs=1e-3)  # headers state milliseconds
    if case.copies:
        assert plan.reason == plan.message == ""
    else:
        assert plan.reason and "\n" not in plan.message and str(source) in plan.message
    if plan.frames is not None:
        assert plan.frames == len(shown_frames(source, gray=case.gray)[0])


@pytest.mark.parametrize("name", CASES)
def test_mux_audio_keeps_every_frame(corpus, name, tmp_path):
    case, source = CASES[name], corpus[name]
    out = tmp_path / "out.mp4"
    plan = plan_mux(source, out)
    sound = tone(plan.duration, SR)
    followed = mux_audio(source, sound, SR, out, plan=plan)
    assert followed == plan and os.fspath(followed) == str(out)
    check_output(case, source, out, copied=plan.copy_video)
    # the AAC track lasts exactly as long as the sound given: its priming and padding are marked
    assert probe(out).audio_duration == pytest.approx(sound.shape[1] / SR, abs=0.5 / SR)


@pytest.mark.parametrize("name", CASES)
def test_generate_gives_every_video_sound(corpus, name, tmp_path, capsys):
    case, source = CASES[name], corpus[name]
    out = tmp_path / "out"
    code = main(["generate", "--recipe", "tiny", str(source), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    mp4 = out / f"{source.stem}.mp4"
    check_output(case, source, mp4, copied=case.copies)
    # the sound is round(duration * SR) samples long, duration read from the header in ms
    assert len(load_audio(mp4, sample_rate=SR)[0]) == pytest.approx(case.end * SR, abs=1)
    if not case.copies:  # the re-encoding is said, in one line, with its reason
        reason = plan_mux(source, mp4).reason
        assert len([line for line in err.splitlines() if reason in line]) == 1


@pytest.mark.parametrize("name", ["prores.mov", "animation.gif", "odd_size_prores.mov"])
def test_a_mov_output_copies_what_mp4_cannot_hold(corpus, name, tmp_path):
    case, source = CASES[name], corpus[name]
    out = tmp_path / "out.mov"
    plan = mux_audio(source, tone(case.end, SR), SR, out)
    assert plan.copy_video and plan.reason == ""
    check_output(case, source, out, copied=True)


def test_a_clip_of_a_video_is_cut_to_the_frame(corpus, tmp_path):
    """A window (a manifest's start and duration) re-encodes the frames on screen in it, the
    first one at 0, and nothing else."""
    case = CASES["h264_bframes.mkv"]
    source, out = corpus[case.name], tmp_path / "clip.mp4"
    plan = plan_mux(source, out, start=0.35, duration=0.4)
    assert plan.clip and not plan.copy_video and "0.35-0.75 s" in plan.reason
    assert (plan.start, plan.duration) == (0.35, 0.4)
    mux_audio(source, tone(0.4, SR), SR, out, plan=plan)
    got, _ = shown_frames(out, gray=False)
    # on screen from 0.35 s: frame 3 (shown since 0.3 s), then frames 4-7 at 0.4-0.7 s
    assert [index for _, index in got] == [3, 4, 5, 6, 7]
    # Matroska's millisecond ticks
    assert [t for t, _ in got] == pytest.approx([0.0, 0.05, 0.15, 0.25, 0.35], abs=1e-3)
    assert video_end(out) == pytest.approx(0.4, abs=1e-3)
    assert probe(out).audio_duration == pytest.approx(0.4, abs=1 / SR)


def test_outputs_and_windows_that_cannot_be_refuse_in_one_sentence(corpus, tmp_path):
    source = corpus["h264.mp4"]
    with pytest.raises(MediaError, match=r"out\.mkv: a video with sound is written as") as exc:
        plan_mux(source, tmp_path / "out.mkv")
    assert "\n" not in str(exc.value)
    with pytest.raises(MediaError, match="lasts 1.00 s, shorter than the window 0.5-2.5 s"):
        plan_mux(source, tmp_path / "out.mp4", start=0.5, duration=2.0)
    with pytest.raises(MediaError, match="must start at or after 0 s"):
        plan_mux(source, tmp_path / "out.mp4", start=-1.0)
    audio_only = write_audio(tmp_path / "sound.wav", tone(0.5, SR), SR)
    with pytest.raises(MediaError, match="has no video stream to add sound to"):
        plan_mux(audio_only, tmp_path / "out.mp4")


def test_a_plan_for_another_video_is_a_bug(corpus, tmp_path):
    plan = plan_mux(corpus["h264.mp4"], tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="the plan is for"):
        mux_audio(corpus["vp9.webm"], tone(1.0, SR), SR, tmp_path / "a.mp4", plan=plan)
    # another name of the same container is fine (a temporary written before a rename)
    mux_audio(corpus["h264.mp4"], tone(1.0, SR), SR, tmp_path / "b.mp4", plan=plan)
    assert len(shown_frames(tmp_path / "b.mp4", gray=False)[0]) == 10


def test_a_stream_without_timestamps_is_reencoded_at_its_nominal_rate(tmp_path):
    """A raw H.264 stream (no container, so no times and no stated length): its length is
    counted from its packets and it is re-encoded, frame i at i / its nominal rate."""
    source = write_video(tmp_path / "raw.h264", seconds=1.0, fps=10, width=64, height=48,
                         codec="libx264")
    info = probe(source)
    assert info.duration == pytest.approx(10 / info.fps)
    out = tmp_path / "out.mp4"
    plan = mux_audio(source, tone(info.duration, SR), SR, out)
    assert not plan.copy_video and "carry no presentation times" in plan.reason
    got, _ = shown_frames(out, gray=False)
    assert [index for _, index in got] == list(range(10))
    # i / 25 s is a whole number of the stream's 1/1200000 s ticks and of the mp4's: the 1e-3
    # is only the float seconds' slack
    assert [t for t, _ in got] == pytest.approx([i / info.fps for i in range(10)], abs=1e-3)
    assert video_end(out) == pytest.approx(info.duration, abs=1e-3)


@pytest.mark.parametrize("make", ["png", "one_frame"])
def test_generate_refuses_a_still_picture_in_one_line(tmp_path, capsys, make):
    photo = tmp_path / "photo.mp4"
    if make == "png":
        write_picture(photo)
    else:
        write_video(photo, seconds=0.1, fps=10)
    code = main(["generate", "--recipe", "tiny", str(photo), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and "holds one still picture" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
