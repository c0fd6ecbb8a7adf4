"""Synthetic media files for tests, written with PyAV (independently of :mod:`v2a.media`).

Every frame is one flat colour that encodes its index, so a test can tell which source frame a
decoder handed back, after lossy compression, resizing, cropping and rotation::

    from tests.media_fixtures import write_video, frame_indices

    path = write_video(tmp_path / "a.mp4", seconds=2.0, fps=10, audio=True)
    video = load_video(path, fps=5)
    assert frame_indices(video.frames) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]

Helpers (all keyword arguments after the path; sizes are ``width``/``height`` in pixels):

* :func:`write_video` — one video, optional audio track: any fps, size, pixel format, codec,
  duration; variable frame rate through explicit frame ``times``; display-matrix ``rotation``;
  custom frame images through ``image``; ``faststart`` mp4 (index first, as sites serve them).
* :func:`write_audio` / :func:`tone` — an audio-only file and a sine wave.
* :func:`truncated_copy` — the first part of a file's bytes (a download that stopped).
* :func:`write_dataset` — a folder of ``n`` short videos with audio whose colours and tone
  frequencies differ per video.
* :func:`write_broken` — one file per kind of bad media (:data:`BROKEN_KINDS`), with the words
  :class:`v2a.media.MediaError` uses for each in :data:`BROKEN_REASONS`.
* :func:`write_picture` — one still image (PNG, JPEG) under any name.
* :func:`write_corpus` — one short video per case of :data:`CORPUS`: the containers, codecs and
  timings v2a meets in the wild (B-frames in Matroska, ProRes, GIF, variable frame rates,
  timestamps shared by two frames, rotation, odd sizes...).
* :func:`frame_colour` / :func:`frame_index` / :func:`frame_indices` — the colour code.

Codecs this PyAV build writes (no ffmpeg binary is needed): ``libx264`` (mp4/mov/mkv/ts; even
sizes for yuv420p, any size for yuv444p; B-frames unless ``options={"bf": "0"}``), ``libx265``,
``mpeg4`` (mp4/avi/mkv, any size, yuv420p), ``ffv1`` (mkv, 8-bit pixel formats including
``gray``), ``mjpeg`` (avi, yuvj420p), ``libvpx-vp9`` (webm), ``prores_ks`` (mov, yuv422p10le),
``gif`` (``gray`` keeps the colour code exact; its 8-bit colour formats do not).
``codec=None`` picks one that fits the suffix, size and pixel format. (Encoding RGB frames as
``gray16le`` gave wrong levels here: use 8-bit ``gray``.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# -- the colour code ---------------------------------------------------------------------------

_LEVELS = (24, 76, 128, 180, 232)  # 52 apart: survives yuv420p + x264 with room to spare
_GRAY_LEVELS = tuple(range(20, 241, 20))  # 12 levels, 20 apart
PALETTE_SIZE = len(_LEVELS) ** 3  # 125 distinct colours; indices repeat modulo this
GRAY_PALETTE_SIZE = len(_GRAY_LEVELS)


def frame_colour(index: int, *, gray: bool = False) -> tuple[int, int, int]:
    """The RGB (0..255) colour of frame ``index`` (modulo the palette size)."""
    if gray:
        level = _GRAY_LEVELS[index % GRAY_PALETTE_SIZE]
        return (level, level, level)
    i = index % PALETTE_SIZE
    n = len(_LEVELS)
    return (_LEVELS[i // (n * n)], _LEVELS[(i // n) % n], _LEVELS[i % n])


def frame_index(frame, *, gray: bool = False) -> int:
    """The palette index (``index % PALETTE_SIZE``) of a decoded frame.

    ``frame``: ``[3, h, w]`` float in [0, 1] (a torch tensor or numpy array), or an RGB triple
    in 0..255. The frame's mean colour is matched to the nearest palette colour.
    """
    rgb = np.asarray(frame, dtype=np.float64)
    if rgb.ndim == 3:
        rgb = rgb.reshape(3, -1).mean(axis=1) * 255.0
    size = GRAY_PALETTE_SIZE if gray else PALETTE_SIZE
    palette = np.array([frame_colour(i, gray=gray) for i in range(size)], dtype=np.float64)
    return int(np.argmin(((palette - rgb) ** 2).sum(axis=1)))


def frame_indices(frames, *, gray: bool = False) -> list[int]:
    """:func:`frame_index` of each frame of ``frames: [t, 3, h, w]``."""
    return [frame_index(np.asarray(f), gray=gray) for f in frames]


def flat_image(index: int, width: int, height: int, *, gray: bool = False) -> np.ndarray:
    """``[height, width, 3]`` uint8 filled with :func:`frame_colour` of ``index``."""
    return np.full((height, width, 3), frame_colour(index, gray=gray), dtype=np.uint8)


# -- audio -------------------------------------------------------------------------------------


def tone(seconds: float, sample_rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine at ``freq`` Hz, amplitude 0.5: ``[channels, round(seconds * sample_rate)]``."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return np.repeat(0.5 * np.sin(2 * math.pi * freq * t)[None], channels, axis=0)


def _encode_audio(out, stream, wav: np.ndarray, sample_rate: int, codec: str) -> None:
    layout = "mono" if wav.shape[0] == 1 else "stereo"
    fmt = "s16" if codec == "pcm_s16le" else "fltp"
    step = 1024
    for i in range(0, wav.shape[1], step):
        chunk = wav[:, i:i + step]
        if fmt == "s16":
            data = (np.clip(chunk, -1, 1).T.reshape(1, -1) * 32767).astype(np.int16)
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


def _add_audio_stream(out, codec: str, sample_rate: int, channels: int):
    return out.add_stream(codec, rate=sample_rate, layout="mono" if channels == 1 else "stereo")


def write_audio(path, wav: np.ndarray, sample_rate: int, codec: str = "pcm_s16le") -> Path:
    """Write ``wav [c, n]`` float (c = 1 or 2) as an audio-only file; returns ``path``.

    ``codec``: ``pcm_s16le`` (wav, mov, mkv), ``aac`` (m4a, mp4), ``flac``, ``libopus``...
    """
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = _add_audio_stream(out, codec, sample_rate, wav.shape[0])
        _encode_audio(out, stream, wav, sample_rate, codec)
    return path


# -- video -------------------------------------------------------------------------------------


def _pick_codec(suffix: str, width: int, height: int, pix_fmt: str) -> str:
    if pix_fmt == "gray" or suffix == ".mkv" and pix_fmt not in ("yuv420p", "yuvj420p", "yuv444p"):
        return "ffv1"
    if suffix == ".webm":
        return "libvpx-vp9"
    if suffix == ".avi":
        return "mjpeg" if pix_fmt.startswith("yuvj") else "mpeg4"
    if pix_fmt in ("yuv420p", "yuvj420p") and (width % 2 or height % 2):
        return "mpeg4"
    return "libx264"


def _default_audio_codec(suffix: str) -> str:
    return "aac" if suffix in (".mp4", ".m4v", ".mov", ".m4a") else "pcm_s16le"


def write_video(
    path,
    *,
    seconds: float = 1.0,
    fps: float = 10.0,
    width: int = 32,
    height: int = 32,
    times: Sequence[float] | None = None,
    first_index: int = 0,
    image: Callable[[int], np.ndarray] | None = None,
    pix_fmt: str = "yuv420p",
    codec: str | None = None,
    options: dict[str, str] | None = None,
    rotation: int = 0,
    mirrored: bool = False,
    audio: bool = False,
    audio_seconds: float | None = None,
    sample_rate: int = 16000,
    channels: int = 1,
    frequency: float = 440.0,
    wave: np.ndarray | None = None,
    audio_codec: str | None = None,
    faststart: bool = False,
) -> Path:
    """Write a synthetic video (and optionally an audio track) to ``path``; returns ``path``.

    Frames: ``round(seconds * fps)`` frames at times ``i / fps``, or one frame per entry of
    ``times`` (seconds, increasing: variable frame rate; ``fps`` is then only the nominal rate
    stored in the header). Frame ``i`` shows :func:`frame_colour` ``(first_index + i)`` (gray
    levels when ``pix_fmt="gray"``) unless ``image(i)`` gives its ``[height, width, 3]`` uint8
    RGB picture.

    ``rotation``: counter-clockwise degrees written as the stream's display matrix (what a
    phone does), mirrored left to right after the turn with ``mirrored`` (a front camera); the
    stored pictures stay ``width`` x ``height``.

    Audio (``audio=True`` or ``wave`` given): ``wave [c, n]`` float, else :func:`tone` of
    ``frequency`` Hz lasting ``audio_seconds`` (default: the video's length) at
    ``sample_rate``; ``audio_codec`` defaults to AAC in mp4/mov, PCM elsewhere.

    ``faststart``: mp4/mov with the index before the data (as streaming sites serve them), so
    a truncated copy still opens; by default the index is at the end.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    codec = codec or _pick_codec(suffix, width, height, pix_fmt)
    gray = pix_fmt == "gray"
    if times is None:
        times = [i / fps for i in range(round(seconds * fps))]
    times = list(times)
    span = times[-1] + 1 / fps if times else 0.0
    time_base = Fraction(1, 6000)  # divides every usual rate; mpeg4 needs a denominator < 2**16
    if suffix == ".avi":  # AVI counts frames: its tick is one frame (so no variable rate)
        time_base = 1 / Fraction(fps).limit_denominator(1001)
    container_options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_options) as out:
        rate = Fraction(fps).limit_denominator(1001)
        stream = out.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        if rotation or mirrored:
            stream.set_display_rotation(rotation, hflip=mirrored)
        audio_stream = None
        if audio or wave is not None:
            if wave is None:
                length = span if audio_seconds is None else audio_seconds
                wave = tone(length, sample_rate, frequency, channels)
            audio_codec = audio_codec or _default_audio_codec(suffix)
            audio_stream = _add_audio_stream(out, audio_codec, sample_rate, wave.shape[0])
        for i, t in enumerate(times):
            if image is not None:
                picture = np.ascontiguousarray(image(i), dtype=np.uint8)
            else:
                picture = flat_image(first_index + i, width, height, gray=gray)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if audio_stream is not None:
            _encode_audio(out, audio_stream, wave, sample_rate, audio_codec)
    return path


def truncated_copy(src, dest, *, keep: float = 0.5) -> Path:
    """Write the first ``keep`` fraction of ``src``'s bytes to ``dest`` (an interrupted copy)."""
    data = Path(src).read_bytes()
    dest = Path(dest)
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


# -- folders of clips --------------------------------------------------------------------------


def write_dataset(
    folder,
    n: int,
    *,
    seconds: float = 2.0,
    fps: float = 8.0,
    width: int = 32,
    height: int = 32,
    sample_rate: int = 16000,
    suffix: str = ".mp4",
    **kwargs,
) -> list[Path]:
    """``n`` videos ``clip000.mp4``... in ``folder`` (created), each with an audio track.

    Video ``k`` starts at colour index ``17 * k`` and carries a tone of ``220 + 55 * k`` Hz, so
    clips differ in both picture and sound. Extra ``kwargs`` go to :func:`write_video`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_video(
            folder / f"clip{k:03d}{suffix}",
            seconds=seconds, fps=fps, width=width, height=height, first_index=17 * k,
            audio=True, sample_rate=sample_rate, frequency=220.0 + 55.0 * k, **kwargs,
        )
        for k in range(n)
    ]


BROKEN_KINDS = ("empty", "not_media", "truncated", "no_video", "no_audio", "too_short")

# Words the MediaError for each kind contains (after the file's path).
BROKEN_REASONS = {
    "empty": "is empty",
    "not_media": "is not a media file",
    "truncated": "truncated",
    "no_video": "has no video stream",
    "no_audio": "has no audio stream",
    "too_short": "shorter than",
}


def write_broken(folder, *, seconds: float = 2.0, sample_rate: int = 16000) -> dict[str, Path]:
    """One bad file per kind of :data:`BROKEN_KINDS` in ``folder`` (created), by kind.

    ``too_short`` lasts a quarter of ``seconds`` (so a window of ``seconds`` does not fit),
    ``no_audio`` is a good video without sound (bad only as a training clip), ``no_video`` an
    mp4 with only an audio track, ``truncated`` the first 40 % of a good mp4's bytes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {kind: folder / f"broken_{kind}.mp4" for kind in BROKEN_KINDS}
    files["empty"].write_bytes(b"")
    files["not_media"].write_text("this is a text file, not a video\n" * 50)
    good = write_video(folder / "_whole.mp4", seconds=seconds, fps=8, audio=True,
                       sample_rate=sample_rate)
    truncated_copy(good, files["truncated"], keep=0.4)
    good.unlink()
    write_audio(files["no_video"], tone(seconds, sample_rate), sample_rate, codec="aac")
    write_video(files["no_audio"], seconds=seconds, fps=8)
    write_video(files["too_short"], seconds=seconds / 4, fps=8, audio=True, sample_rate=sample_rate)
    return files


# -- still pictures ----------------------------------------------------------------------------


def write_picture(path, *, codec: str = "png", width: int = 32, height: int = 24,
                  index: int = 0) -> Path:
    """One still image (``codec`` ``png`` or ``mjpeg``, a JPEG) of :func:`frame_colour`
    ``(index)`` at ``path``, whatever its suffix says: a picture renamed ``.mp4``."""
    path = Path(path)
    fmt = {"png": "rgb24", "mjpeg": "yuvj420p"}[codec]
    with av.open(str(path), "w", format="image2", options={"update": "1"}) as out:
        stream = out.add_stream(codec)
        stream.width, stream.height, stream.pix_fmt = width, height, fmt
        frame = av.VideoFrame.from_ndarray(flat_image(index, width, height), format="rgb24")
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# -- a corpus of containers, codecs and timings ------------------------------------------------


@dataclass(frozen=True)
class CorpusCase:
    """One video of the corpus: its file ``name`` (the suffix picks the container), the
    :func:`write_video` arguments that make it, whether v2a can copy its video stream into an
    mp4 (``copies``; else it re-encodes it), and what the case is there for (``why``)."""

    name: str
    write: dict
    copies: bool
    why: str

    @property
    def gray(self) -> bool:
        """Whether its frames carry the gray colour code (:func:`frame_index` ``gray=True``)."""
        return self.write.get("pix_fmt") == "gray"

    @property
    def end(self) -> float:
        """Seconds from the start to the end of its last frame."""
        fps = self.write.get("fps", CORPUS_FPS)
        times = self.write.get("times")
        return times[-1] + 1 / fps if times else self.write.get("seconds", CORPUS_SECONDS)


CORPUS_SECONDS, CORPUS_FPS, CORPUS_WIDTH, CORPUS_HEIGHT = 1.0, 10.0, 64, 48

_B_FRAMES = {"bf": "3", "g": "8"}  # x264: three B-frames between references, a key frame every 8
_VFR = [0.0, 0.05, 0.2, 0.23, 0.5, 0.8, 0.85, 1.1]  # 8 frames, 30 to 300 ms apart
# Matroska counts milliseconds: 0.1 and 0.1003 s (0.6 and 0.6004 s) round to one timestamp
_SHARED_TIMES = [0.0, 0.1, 0.1003, 0.25, 0.3, 0.55, 0.6, 0.6004, 0.9]
_X265 = {"x265-params": "log-level=error"}  # x265 prints its statistics otherwise
_PRORES = dict(codec="prores_ks", pix_fmt="yuv422p10le")

CORPUS: tuple[CorpusCase, ...] = (
    CorpusCase("h264.mp4", dict(codec="libx264", options={"bf": "0"}), True,
               "H.264 without B-frames: decode order is presentation order"),
    CorpusCase("h264_bframes.mp4", dict(codec="libx264", options=_B_FRAMES), True,
               "H.264 with B-frames, an edit list hiding the decode delay"),
    CorpusCase("h264_bframes.mkv", dict(codec="libx264", options=_B_FRAMES), True,
               "Matroska leaves dts unset on a B-frame stream's first packets"),
    CorpusCase("h264_bframes.mov", dict(codec="libx264", options=_B_FRAMES), True,
               "QuickTime with B-frames"),
    CorpusCase("h264_bframes.ts", dict(codec="libx264", options=_B_FRAMES), True,
               "MPEG-TS: a clock starting after 0, H.264 in Annex B byte-stream form"),
    CorpusCase("h264_10bit.mkv", dict(codec="libx264", pix_fmt="yuv420p10le",
                                      options=_B_FRAMES), True,
               "10-bit H.264 (High 10) with B-frames in Matroska"),
    CorpusCase("hevc.mp4", dict(codec="libx265", options=_X265), True, "HEVC with B-frames"),
    CorpusCase("hevc.mkv", dict(codec="libx265", options=_X265), True,
               "HEVC in Matroska: no frame decoded from its copy before"),
    CorpusCase("vp9.webm", dict(codec="libvpx-vp9"), True, "VP9 in WebM"),
    CorpusCase("mpeg4.avi", dict(codec="mpeg4"), True, "MPEG-4 part 2 in AVI"),
    CorpusCase("mjpeg.avi", dict(codec="mjpeg", pix_fmt="yuvj420p"), True,
               "Motion JPEG (full-range YUV) in AVI"),
    CorpusCase("prores.mov", dict(_PRORES), False, "ProRes: mp4 cannot hold it"),
    CorpusCase("animation.gif", dict(codec="gif", pix_fmt="gray"), False,
               "GIF: mp4 cannot hold it"),
    CorpusCase("vfr.mkv", dict(codec="libx264", options=_B_FRAMES, times=_VFR), True,
               "variable frame rate with B-frames"),
    CorpusCase("vfr_prores.mov", dict(_PRORES, times=_VFR), False,
               "variable frame rate, re-encoded: it stays variable"),
    CorpusCase("shared_times.mkv", dict(codec="libx264", options={"bf": "0"},
                                        times=_SHARED_TIMES), True,
               "two pairs of frames with one timestamp each"),
    CorpusCase("shared_times_bframes.mkv", dict(codec="libx264", options=_B_FRAMES,
                                                times=_SHARED_TIMES), True,
               "shared timestamps and B-frames"),
    CorpusCase("shared_times_prores.mov", dict(_PRORES, times=_SHARED_TIMES), False,
               "shared timestamps, re-encoded"),
    CorpusCase("rotated.mp4", dict(codec="libx264", rotation=90), True,
               "a phone's display matrix, kept by the copy"),
    CorpusCase("rotated_prores.mov", dict(_PRORES, rotation=-90), False,
               "a display matrix carried over to the re-encoded stream"),
    CorpusCase("mirrored_prores.mov", dict(_PRORES, rotation=90, mirrored=True), False,
               "a front camera's turned and mirrored picture, re-encoded"),
    CorpusCase("odd_size.mkv", dict(codec="mpeg4", width=63, height=47), True,
               "an odd width and height, copied as they are"),
    CorpusCase("odd_size_prores.mov", dict(_PRORES, width=63, height=47), False,
               "an odd width and height, re-encoded as yuv420p"),
)
"""The corpus :func:`write_corpus` writes: ~1 s clips of 64x48 at 10 frames a second."""


def write_corpus(folder, cases: Sequence[CorpusCase] = CORPUS) -> dict[str, Path]:
    """Write each case of ``cases`` into ``folder`` (created); returns the paths by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases:
        arguments = dict(seconds=CORPUS_SECONDS, fps=CORPUS_FPS, width=CORPUS_WIDTH,
                         height=CORPUS_HEIGHT) | case.write
        paths[case.name] = write_video(folder / case.name, **arguments)
    return paths
