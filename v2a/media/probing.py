"""Opening and probing media files: :func:`open_media`, :func:`probe` (:class:`MediaInfo`), the
time and orientation facts every reader of a file needs, and the checks of a window a user asks
for (:func:`check_window`, :data:`WINDOW_TOLERANCE`).

Errors a user can cause raise :class:`MediaError` with one sentence naming the file and the
problem (see :mod:`v2a.media`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from v2a.errors import UserError

WINDOW_TOLERANCE = 0.1
"""Seconds a file may fall short of a window's end; the last frame is held, the audio padded
with silence over that gap. A file ending earlier than this raises :class:`MediaError`."""

# Signatures of containers PyAV reads: a file that starts like one but does not open is
# damaged or truncated (an mp4 whose index was never written), not "some other kind of file".
_SIGNATURES = ((4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (0, b"RIFF"), (0, b"OggS"), (0, b"fLaC"),
               (0, b"ID3"), (0, b"FLV"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"))


class MediaError(UserError):
    """A media file that cannot be used, with the reason."""


def _looks_like_media(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    return any(head[at:at + len(sig)] == sig for at, sig in _SIGNATURES)


def open_media(path: str | Path) -> av.container.InputContainer:
    """Open ``path`` for reading, or raise :class:`MediaError` saying why it cannot be."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path} does not exist")
    if path.is_dir():
        raise MediaError(f"{path} is a folder, not a media file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path} is empty (0 bytes)")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as exc:
        if _looks_like_media(path):
            raise MediaError(
                f"{path} is truncated or damaged: it starts like a media file but PyAV cannot "
                f"open it ({exc.strerror})"
            ) from None
        raise MediaError(f"{path} is not a media file PyAV can read ({exc.strerror})") from None


def video_stream(container) -> av.video.stream.VideoStream | None:
    """The first video stream that is a video, not the cover picture of a song."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def window_text(start: float, duration: float) -> str:
    """How a message names the window of ``duration`` seconds from ``start``."""
    return f"the window {start:g}-{start + duration:g} s"


def check_window(start: float, duration: float | None, *, what: str) -> None:
    """A window comes from a user (``--start``/``--duration``, a manifest's rows): one starting
    before 0 or lasting no time is a :class:`MediaError`. (A frame rate is the calling code's,
    a video encoder's that validates its own: a bad one is a bug, a ``ValueError``.)"""
    if start < 0 or (duration is not None and not duration > 0):
        length = "" if duration is None else f" lasting {duration:g} s"
        raise MediaError(f"a window of {what} must start at or after 0 s and last a positive "
                         f"time, not start at {start:g} s{length}")


# -- probing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds, from its header (and its first video frame, for rotation).

    ``duration``: seconds the file lasts (the longest stream). ``fps``: the video's nominal
    (average) frame rate: frames may be spaced unevenly, :func:`load_video` uses their real
    times. ``width``/``height``: the displayed size, after ``rotation`` (counter-clockwise
    degrees, a multiple of 90, as PyAV's ``VideoFrame.rotation``) and a mirroring the display
    matrix may add (``mirrored``). Video or audio fields are ``None`` when that stream is absent.
    """

    path: Path
    duration: float
    has_video: bool
    has_audio: bool
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    rotation: int = 0
    mirrored: bool = False
    video_duration: float | None = None
    sample_rate: int | None = None
    audio_channels: int | None = None
    audio_duration: float | None = None


def stream_duration(stream) -> float | None:
    """The header's duration of one stream in seconds, if it states one."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:  # Matroska writes "HH:MM:SS.nnnnnnnnn" per stream
        try:
            h, m, s = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
        except ValueError:
            return None
    return None


def late_start(container) -> float:
    """Seconds at which the file's clock starts when that is after 0, else 0. An MPEG-TS file's
    clock starts wherever its recording began; players show that moment as 0, and so does v2a."""
    start = container.start_time
    return max(0.0, start / av.time_base) if start is not None else 0.0


def stream_begins(container, stream) -> float:
    """Seconds from the file's start (see :func:`late_start`) to ``stream``'s first moment."""
    if stream.start_time is None:
        return 0.0
    return max(0.0, float(stream.start_time * stream.time_base) - late_start(container))


@dataclass(frozen=True)
class Orientation:
    """How a stored picture is turned upright: transpose, then flip rows / columns."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    rotation: int = 0  # counter-clockwise degrees the display matrix states (rounded to 90)
    mirrored: bool = False

    def apply(self, rgb: np.ndarray) -> np.ndarray:  # [h, w, 3] → [h', w', 3]
        if self.transpose:
            rgb = rgb.transpose(1, 0, 2)
        if self.flip_rows:
            rgb = rgb[::-1]
        if self.flip_cols:
            rgb = rgb[:, ::-1]
        return rgb


def frame_orientation(frame: av.VideoFrame) -> Orientation:
    """The display matrix of ``frame`` → what ffmpeg's ``autorotate`` does with it.

    The same cases as ffmpeg's command-line tools (fftools): right-angle rotations, with the
    mirrorings they combine with; another angle is rounded to the nearest right angle.
    """
    side = frame.side_data.get("DISPLAYMATRIX")
    if side is None:
        return Orientation()
    m = np.frombuffer(bytes(side)[:36], dtype=np.int32).astype(np.float64) / 65536.0
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0 or scale1 == 0:
        return Orientation()
    counter_clockwise = -math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))
    rotation = 90 * round(counter_clockwise / 90) % 360
    rotation = rotation - 360 if rotation > 180 else rotation  # in (-180, 180]
    mirrored = m[0] * m[4] - m[1] * m[3] < 0
    theta = 90 * round(-counter_clockwise / 90) % 360  # clockwise turn that makes it upright
    if theta == 90:
        # "clock", or "cclock_flip" when mirrored
        turn = Orientation(transpose=True, flip_cols=m[3] <= 0)
    elif theta == 180:
        turn = Orientation(flip_rows=m[4] < 0, flip_cols=m[0] < 0)
    elif theta == 270:
        # "cclock", or "clock_flip" when mirrored
        turn = Orientation(transpose=True, flip_rows=True, flip_cols=m[3] < 0)
    else:
        turn = Orientation(flip_rows=m[4] < 0)
    return Orientation(turn.transpose, turn.flip_rows, turn.flip_cols, rotation, mirrored)


def _is_picture_format(container) -> bool:
    """Whether ``container`` was opened by one of FFmpeg's image readers (a PNG, JPEG... file,
    whatever its name says), which hold one picture per file."""
    name = container.format.name
    return name == "image2" or name.endswith("_pipe")


def _first_frame(container, stream, path: Path) -> tuple[av.VideoFrame, int]:
    """The first decoded frame of ``stream`` and how many packets it holds: the number read
    until that frame came out and a second packet was seen, so 1 means a one-frame stream."""
    first, packets = None, 0
    try:
        for packet in container.demux(stream):  # ends with an empty packet that flushes
            if packet.size:
                packets += 1
            for frame in stream.decode(packet):
                if first is None:
                    first = frame
            if first is not None and packets >= 2:
                break
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path} is truncated or damaged: decoding its first video frame "
                         f"failed ({exc.strerror})") from None
    if first is None:
        raise MediaError(f"{path} has a video stream with no decodable frames")
    return first, packets


def _demuxed_end(path: Path) -> float:
    """Seconds from the start of ``path`` to where its video's last packet ends, read from the
    packets (not decoded): for files whose headers state no duration. Packets without times (a
    raw H.264 stream's) last a frame at the stream's nominal rate each."""
    with open_media(path) as container:
        stream = video_stream(container)
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        end, count = None, 0
        for packet in container.demux(stream):
            if packet.size:
                count += 1
                if packet.pts is not None:
                    end = max(end or 0, packet.pts + (packet.duration or 0))
        if end is None:
            return count / rate
        return max(0.0, float(end * stream.time_base) - late_start(container))


def probe(path: str | Path) -> MediaInfo:
    """What ``path`` holds: streams, duration, frame rate, displayed size, rotation.

    Raises :class:`MediaError` for a file that cannot be read, one without a video or audio
    stream, and a still picture (an image file under any name, or a video of one frame): there
    is nothing to give sound to.
    """
    path = Path(path)
    with open_media(path) as container:
        video = video_stream(container)
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise MediaError(f"{path} has neither a video nor an audio stream")
        durations = [d for d in (stream_duration(s) for s in (video, audio) if s is not None) if d]
        if container.duration is not None:
            durations.append(container.duration / av.time_base)
        info = dict(path=path, duration=max(durations, default=0.0), has_video=video is not None,
                    has_audio=audio is not None)
        if audio is not None:
            info.update(sample_rate=audio.codec_context.sample_rate,
                        audio_channels=audio.codec_context.channels,
                        audio_duration=stream_duration(audio))
        if video is not None:
            rate = video.average_rate or video.guessed_rate
            video.codec_context.thread_count = 1
            first, packets = _first_frame(container, video, path)
            if packets < 2 or _is_picture_format(container):
                raise MediaError(f"{path} holds one still picture ({video.codec_context.name}), "
                                 f"not a video")
            if not info["duration"]:
                info["duration"] = _demuxed_end(path)  # no header states a length
            width, height = first.width, first.height
            orientation = frame_orientation(first)
            if orientation.transpose:
                width, height = height, width
            info.update(fps=float(rate) if rate else None, width=width, height=height,
                        rotation=orientation.rotation, mirrored=orientation.mirrored,
                        video_duration=stream_duration(video))
        return MediaInfo(**info)
