"""Audio decoding through PyAV, and one-sentence errors for bad media."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from v2a.media import MediaError, load_audio, media_files


def write_audio(path, wav: np.ndarray, sample_rate: int, codec: str = "pcm_s16le") -> None:
    """Write ``wav [c, n]`` float with PyAV (the test's own writer, independent of v2a.media)."""
    layout = "mono" if wav.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=sample_rate, layout=layout)
        fmt = "s16" if codec == "pcm_s16le" else "fltp"
        step = 1024
        for i in range(0, wav.shape[1], step):
            chunk = wav[:, i:i + step]
            if fmt == "s16":
                data = (chunk.T.reshape(1, -1) * 32767).astype(np.int16)
            else:
                data = np.ascontiguousarray(chunk, dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
            frame.sample_rate = sample_rate
            frame.pts = i
            frame.time_base = Fraction(1, sample_rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def tone(seconds: float, sample_rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return np.repeat(0.5 * np.sin(2 * math.pi * freq * t)[None], channels, axis=0)


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
    for name in ("b.wav", "sub/a.flac", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = media_files([tmp_path], (".wav", ".flac"))
    assert [p.name for p in found] == ["b.wav", "a.flac"]  # sorted by path
    with pytest.raises(MediaError, match="does not exist"):
        media_files([tmp_path / "nope"], (".wav",))
