"""Media files in and out through PyAV. Nothing else in v2a opens media files.

* :func:`load_audio` — the first audio stream → ``[c, n]`` float at a given sample rate.
* :func:`load_video` — the first video stream → :class:`Video` frames ``[t, 3, h, w]`` sampled
  at a target frame rate on the grid ``start + i / fps``, with the presentation time of the
  source frame shown at each grid time (variable frame rate is handled: each grid time gets the
  frame on screen then). :func:`resample_video` does the same for frames already in memory.
* :func:`probe` — what a file holds (:class:`MediaInfo`), from its header and first frame.
* :func:`write_video` — RGB frames (+ audio) → an H.264/AAC mp4, atomically.
* :func:`plan_mux` / :func:`mux_audio` — a video with new sound: the input's video stream copied
  packet for packet when the output container can hold it, else re-encoded as H.264; the plan
  is known, from the header and first packets, before any sound is generated.

Times are the file's presentation timestamps in seconds from its start: 0 for almost every
file, the first timestamp of an MPEG-TS file, whose clock starts wherever the recording began
(as players show it). A stream starting later holds its first frame / begins its samples at its
own time.

Rotation: the display matrix a phone writes (frame side data in PyAV 18, also behind
``VideoFrame.rotation``) is applied as ffmpeg's own ``autorotate`` does — right-angle rotations
and the mirrorings combined with them — so frames come out upright and ``width``/``height`` are
the displayed ones. An angle that is not a multiple of 90 degrees is rounded to the nearest
one (ffmpeg would rotate by the exact angle and pad the corners).

Errors a user can cause (a missing, empty, truncated or non-media file, a file without the
stream asked for, a still picture where a video is needed, a file shorter than the window asked
for, a window starting before 0 s) raise :class:`MediaError` with one sentence naming the file and
the problem; a dataset catches it, skips the clip and reports it. A non-positive frame rate is
the calling code's mistake and raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from v2a.errors import UserError
from v2a.files import atomic_output, is_temporary

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")

WINDOW_TOLERANCE = 0.1
"""Seconds a file may fall short of a window's end; the last frame is held, the audio padded
with silence over that gap. A file ending earlier than this raises :class:`MediaError`."""

AUDIO_PREROLL = 0.5  # seconds decoded before an audio window, see load_audio

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


def _video_stream(container) -> av.video.stream.VideoStream | None:
    """The first video stream that is a video, not the cover picture of a song."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _window_text(start: float, duration: float) -> str:
    return f"the window {start:g}-{start + duration:g} s"


# -- audio -------------------------------------------------------------------------------------


def load_audio(
    path: str | Path,
    *,
    sample_rate: int,
    channels: int | None = None,
    start: float = 0.0,
    duration: float | None = None,
) -> Tensor:
    """Decode the first audio stream of ``path`` → ``[c, n]`` float32 in [-1, 1] at ``sample_rate``.

    ``channels``: 1 (mono mix), 2 (stereo) or None (the file's own, more than two mixed to
    stereo). ``start``/``duration`` (seconds) cut a window; the encoder padding some formats add
    (AAC) is trimmed to the stream's duration. A window gives exactly
    ``round(duration * sample_rate)`` samples; audio ending up to :data:`WINDOW_TOLERANCE`
    before the window's end is padded with silence, earlier raises :class:`MediaError`.
    """
    with open_media(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        source_channels = stream.codec_context.channels or 1
        channels = channels or min(source_channels, 2)
        resampler = av.AudioResampler(
            format="fltp", layout="mono" if channels == 1 else "stereo", rate=sample_rate
        )
        origin = _late_start(container)
        if start > AUDIO_PREROLL:
            # a decoder's first frame after a seek lacks its overlap with the previous one (AAC,
            # MP3, Opus): land early enough that it falls before the window
            target = int((origin + start - AUDIO_PREROLL) / stream.time_base)
            container.seek(target, stream=stream, backward=True)
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        try:
            for frame in container.decode(stream):
                if first_time is None:
                    first_time = float(frame.time) - origin if frame.time is not None else 0.0
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
                if duration is not None and chunks:
                    decoded = sum(c.shape[1] for c in chunks) / sample_rate
                    if first_time + decoded > start + duration + 0.1:
                        break
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
        except av.error.FFmpegError as exc:
            raise MediaError(
                f"{path} is truncated or damaged: decoding its audio failed ({exc.strerror})"
            ) from None
        if not chunks and start > 0:
            raise MediaError(f"{path} has no audio after {start:g} s")
        if not chunks:
            raise MediaError(f"{path} has an audio stream with no decodable samples")
        wav = np.concatenate(chunks, axis=1)[:channels]
        offset = max(0, round((start - (first_time or 0.0)) * sample_rate))
        end = wav.shape[1]
        if stream.duration is not None and stream.time_base is not None:
            stream_end = _stream_begins(container, stream) + float(stream.duration
                                                                   * stream.time_base)
            end = min(end, round(stream_end * sample_rate)
                      - round((first_time or 0.0) * sample_rate))
        if duration is not None:
            wanted = round(duration * sample_rate)
            available = max(0, end - offset)
            if available < wanted - WINDOW_TOLERANCE * sample_rate:
                audio_end = (first_time or 0.0) + end / sample_rate
                raise MediaError(
                    f"{path} has {audio_end:.2f} s of audio, shorter than "
                    f"{_window_text(start, duration)}"
                )
            wav = wav[:, offset:offset + min(available, wanted)]
            if wav.shape[1] < wanted:
                wav = np.pad(wav, ((0, 0), (0, wanted - wav.shape[1])))
        else:
            wav = wav[:, offset:end]
        return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))


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


def _stream_duration(stream) -> float | None:
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


def _late_start(container) -> float:
    """Seconds at which the file's clock starts when that is after 0, else 0. An MPEG-TS file's
    clock starts wherever its recording began; players show that moment as 0, and so does v2a."""
    start = container.start_time
    return max(0.0, start / av.time_base) if start is not None else 0.0


def _stream_begins(container, stream) -> float:
    """Seconds from the file's start (see :func:`_late_start`) to ``stream``'s first moment."""
    if stream.start_time is None:
        return 0.0
    return max(0.0, float(stream.start_time * stream.time_base) - _late_start(container))


@dataclass(frozen=True)
class _Orientation:
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


def _orientation(frame: av.VideoFrame) -> _Orientation:
    """The display matrix of ``frame`` → what ffmpeg's ``autorotate`` does with it.

    The same cases as ffmpeg's command-line tools (fftools): right-angle rotations, with the
    mirrorings they combine with; another angle is rounded to the nearest right angle.
    """
    side = frame.side_data.get("DISPLAYMATRIX")
    if side is None:
        return _Orientation()
    m = np.frombuffer(bytes(side)[:36], dtype=np.int32).astype(np.float64) / 65536.0
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0 or scale1 == 0:
        return _Orientation()
    counter_clockwise = -math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))
    rotation = 90 * round(counter_clockwise / 90) % 360
    rotation = rotation - 360 if rotation > 180 else rotation  # in (-180, 180]
    mirrored = m[0] * m[4] - m[1] * m[3] < 0
    theta = 90 * round(-counter_clockwise / 90) % 360  # clockwise turn that makes it upright
    if theta == 90:
        # "clock", or "cclock_flip" when mirrored
        turn = _Orientation(transpose=True, flip_cols=m[3] <= 0)
    elif theta == 180:
        turn = _Orientation(flip_rows=m[4] < 0, flip_cols=m[0] < 0)
    elif theta == 270:
        # "cclock", or "clock_flip" when mirrored
        turn = _Orientation(transpose=True, flip_rows=True, flip_cols=m[3] < 0)
    else:
        turn = _Orientation(flip_rows=m[4] < 0)
    return _Orientation(turn.transpose, turn.flip_rows, turn.flip_cols, rotation, mirrored)


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
        stream = _video_stream(container)
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        end, count = None, 0
        for packet in container.demux(stream):
            if packet.size:
                count += 1
                if packet.pts is not None:
                    end = max(end or 0, packet.pts + (packet.duration or 0))
        if end is None:
            return count / rate
        return max(0.0, float(end * stream.time_base) - _late_start(container))


def probe(path: str | Path) -> MediaInfo:
    """What ``path`` holds: streams, duration, frame rate, displayed size, rotation.

    Raises :class:`MediaError` for a file that cannot be read, one without a video or audio
    stream, and a still picture (an image file under any name, or a video of one frame): there
    is nothing to give sound to.
    """
    path = Path(path)
    with open_media(path) as container:
        video = _video_stream(container)
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise MediaError(f"{path} has neither a video nor an audio stream")
        durations = [d for d in (_stream_duration(s) for s in (video, audio) if s is not None) if d]
        if container.duration is not None:
            durations.append(container.duration / av.time_base)
        info = dict(path=path, duration=max(durations, default=0.0), has_video=video is not None,
                    has_audio=audio is not None)
        if audio is not None:
            info.update(sample_rate=audio.codec_context.sample_rate,
                        audio_channels=audio.codec_context.channels,
                        audio_duration=_stream_duration(audio))
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
            orientation = _orientation(first)
            if orientation.transpose:
                width, height = height, width
            info.update(fps=float(rate) if rate else None, width=width, height=height,
                        rotation=orientation.rotation, mirrored=orientation.mirrored,
                        video_duration=_stream_duration(video))
        return MediaInfo(**info)


# -- video -------------------------------------------------------------------------------------


@dataclass
class Video:
    """Frames sampled on a regular time grid.

    ``frames: [t, 3, h, w]`` float32 RGB in [0, 1] (uint8 in [0, 255] if asked for);
    ``times: [t]`` float64 seconds, the grid ``start + i / fps`` (what encoders take as
    ``times``); ``frame_times: [t]`` float64, the presentation time of the source frame shown
    at each grid time (equal to ``times`` for a constant-rate source at the same rate;
    repeated entries mean a held frame).
    """

    frames: Tensor
    times: Tensor
    frame_times: Tensor
    fps: float

    @property
    def start(self) -> float:
        return float(self.times[0]) if len(self.times) else 0.0

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def duration(self) -> float:
        """Seconds the grid covers: ``num_frames / fps``."""
        return self.num_frames / self.fps


def _output_size(
    width: int, height: int, size: int | tuple[int, int] | None
) -> tuple[int, int, int, int]:
    """Displayed ``width x height`` → (scaled w, scaled h, crop w, crop h).

    An int ``size`` scales the shorter side to ``size`` and crops the centre square; ``(h, w)``
    scales to cover ``h x w`` keeping the aspect ratio, then crops the centre.
    """
    if size is None:
        return width, height, width, height
    out_h, out_w = (size, size) if isinstance(size, int) else size
    scale = max(out_h / height, out_w / width)
    return max(out_w, round(width * scale)), max(out_h, round(height * scale)), out_w, out_h


class _FrameConverter:
    """A decoded frame → ``[h, w, 3]`` uint8 upright at the output size, resized first."""

    def __init__(self, size: int | tuple[int, int] | None, threads: int = 1):
        self.size, self.threads = size, threads
        self.plan: tuple | None = None
        # one scaler for the whole video, not one cached on every decoded frame
        self.reformatter = av.video.reformatter.VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        orientation = _orientation(frame)
        key = (frame.width, frame.height, orientation)
        if self.plan is None or self.plan[0] != key:
            swap = orientation.transpose
            disp_w, disp_h = (frame.height, frame.width) if swap else (frame.width, frame.height)
            scaled_w, scaled_h, crop_w, crop_h = _output_size(disp_w, disp_h, self.size)
            stored_w, stored_h = (scaled_h, scaled_w) if swap else (scaled_w, scaled_h)
            shrink = stored_w * stored_h < frame.width * frame.height
            self.plan = (key, stored_w, stored_h, crop_w, crop_h, "AREA" if shrink else "BICUBIC")
        _, stored_w, stored_h, crop_w, crop_h, interpolation = self.plan
        rgb = self.reformatter.reformat(
            frame, width=stored_w, height=stored_h, format="rgb24", interpolation=interpolation,
            threads=self.threads,
        ).to_ndarray()  # [h, w, 3] uint8
        rgb = orientation.apply(rgb)
        top = (rgb.shape[0] - crop_h) // 2
        left = (rgb.shape[1] - crop_w) // 2
        return np.ascontiguousarray(rgb[top:top + crop_h, left:left + crop_w])


def _check_window(start: float, duration: float | None, *, what: str) -> None:
    """A window comes from a user (``--start``/``--duration``, a manifest's rows): one starting
    before 0 or lasting no time is a :class:`MediaError`. (A frame rate is the calling code's,
    a video encoder's that validates its own: a bad one is a bug, a ``ValueError``.)"""
    if start < 0 or (duration is not None and not duration > 0):
        length = "" if duration is None else f" lasting {duration:g} s"
        raise MediaError(f"a window of {what} must start at or after 0 s and last a positive "
                         f"time, not start at {start:g} s{length}")


def load_video(
    path: str | Path,
    *,
    fps: float,
    size: int | tuple[int, int] | None = None,
    start: float = 0.0,
    duration: float | None = None,
    dtype: torch.dtype = torch.float32,
    threads: int = 1,
) -> Video:
    """Decode the first video stream of ``path`` at ``fps`` frames per second → :class:`Video`.

    Grid time ``start + i / fps`` gets the source frame on screen at that time (the last frame
    whose presentation time is not after it), so variable frame rates, dropped and repeated
    frames come out on a regular grid. ``duration`` (seconds) gives ``round(duration * fps)``
    frames and must lie inside the video (up to :data:`WINDOW_TOLERANCE`, over which the last
    frame is held); ``None`` reads to the end. The decoder seeks to the key frame before
    ``start``, so a late window does not decode the file from its beginning. A window starting
    before 0 s or lasting no time is a :class:`MediaError` (a user's); ``fps <= 0`` a
    ``ValueError`` (the calling code's).

    ``size``: ``None`` keeps the displayed size; an int scales the shorter side to it and crops
    the centre square; ``(h, w)`` scales to cover ``h x w`` and crops the centre. Each frame is
    resized as it is decoded, so only output-sized frames are kept. Rotation metadata is
    applied; grayscale, full-range (yuvj), 10-bit and 4:4:4 sources come out as RGB.

    ``dtype``: ``torch.float32`` (or another float type) gives values in [0, 1];
    ``torch.uint8`` gives the decoded bytes in [0, 255] (a quarter of the memory, for caches).

    ``threads``: decoder and scaler threads. 1 suits DataLoader workers (the parallelism is
    across clips) and leaves no FFmpeg thread pool behind for a forked worker to inherit, which
    can deadlock it; 0 lets FFmpeg choose (faster for one large video in one process).
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    _check_window(start, duration, what=str(path))
    with open_media(path) as container:
        stream = _video_stream(container)
        if stream is None:
            kinds = sorted({s.type for s in container.streams if s.type != "video"})
            if container.streams.video:
                kinds.append("a cover picture")
            held = f"it holds only {' and '.join(kinds)}" if kinds else "it holds no streams"
            raise MediaError(f"{path} has no video stream ({held})")
        stream.codec_context.thread_count = threads
        convert = _FrameConverter(size, threads)
        frames, frame_times, end = _decode_grid(container, stream, path, fps, convert, start,
                                                duration)
        header = _header_video_duration(container, stream)
        if duration is None and _stream_duration(stream) is None and container.streams.audio:
            header = None  # the container's duration may be the audio's: no evidence either way
    count = len(frames)
    if count == 0 or (duration is not None and count < round(duration * fps)):
        window = (_window_text(start, duration) if duration is not None
                  else f"the window starting at {start:g} s")
        if header is not None and header > end + WINDOW_TOLERANCE and (
            duration is None or header >= start + duration
        ):
            raise MediaError(f"{path} is truncated: its header says {header:.2f} s but its frames "
                             f"stop at {end:.2f} s, before {window} ends")
        raise MediaError(f"{path} lasts {end:.2f} s, shorter than {window}")
    if duration is None and header is not None and header > end + WINDOW_TOLERANCE:
        raise MediaError(f"{path} is truncated: its header says {header:.2f} s but its frames "
                         f"stop at {end:.2f} s")
    times = start + torch.arange(count, dtype=torch.float64) / fps
    pixels = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # [t, 3, h, w] uint8
    if dtype != torch.uint8:
        pixels = pixels.to(dtype).div_(255.0)
    return Video(
        frames=pixels.contiguous(),
        times=times,
        frame_times=torch.tensor(frame_times, dtype=torch.float64),
        fps=float(fps),
    )


def _header_video_duration(container, stream) -> float | None:
    header = _stream_duration(stream)
    if header is None and container.duration is not None:
        header = container.duration / av.time_base
    return header


def _decode_grid(container, stream, path: Path, fps: float, convert: _FrameConverter,
                 start: float, duration: float | None
                 ) -> tuple[list[np.ndarray], list[float], float]:
    """Walk the decoded frames once, handing each grid time the frame on screen then.

    Returns the output frames, the source time of each, and where the video ends (the last
    frame's time plus its duration).
    """
    origin = _late_start(container)
    if start > 0:
        container.seek(int((origin + start) / stream.time_base), stream=stream, backward=True)
        result = _walk(container, stream, path, fps, convert, start, duration, origin,
                       after_seek=True)
        if result is not None:
            return result
        container.seek(0, stream=stream, backward=True)  # the seek landed past the start
    return _walk(container, stream, path, fps, convert, start, duration, origin, after_seek=False)


def _walk(container, stream, path, fps, convert, start, duration, origin, *, after_seek: bool):
    """One pass of :func:`_decode_grid`; ``None`` if, after a seek, the first frame is late
    or none comes.
    ``origin``: the file's start (:func:`_late_start`), the 0 of the times."""
    count = None if duration is None else round(duration * fps)
    nominal = 1.0 / float(stream.average_rate or stream.guessed_rate or 25)
    eps = 1e-6
    out: list[np.ndarray] = []
    out_times: list[float] = []

    def grid(i: int) -> float:
        return start + i / fps

    def hand_out(frame, frame_time: float, until: float) -> bool:
        """Give ``frame`` every grid time before ``until``; True when the grid is full."""
        picture = None
        while (count is None or len(out) < count) and grid(len(out)) < until - eps:
            if picture is None:
                picture = convert(frame)
            out.append(picture)
            out_times.append(frame_time)
        return count is not None and len(out) >= count

    shown = None  # (frame, time) on screen until the next frame's time
    end = 0.0
    try:
        for frame in container.decode(stream):
            time = float(frame.time) - origin if frame.time is not None else end
            if shown is None and time > start + eps:
                if after_seek:
                    return None
                shown = (frame, time)  # a stream starting late holds its first frame
            if shown is not None and hand_out(*shown, until=time):
                return out, out_times, end
            length = nominal
            if frame.duration and frame.time_base:
                length = float(frame.duration * frame.time_base)
            shown = (frame, time)
            end = time + length
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path} is truncated or damaged: decoding its video failed after "
                         f"{end:.2f} s ({exc.strerror})") from None
    if after_seek and shown is None:
        return None  # the seek found no frame (MPEG-TS seeks by guessing byte offsets)
    if shown is not None:
        hand_out(*shown, until=end if count is None else end + WINDOW_TOLERANCE)
    return out, out_times, end


def frames_on_screen(times: Tensor, grid: Tensor) -> Tensor:
    """Index of the frame on screen at each ``grid`` time, for frames shown from ``times``
    (increasing): the last frame whose time is not after it, the first one before it — the rule
    of :func:`load_video`, with its tolerance."""
    after = torch.searchsorted(times.double(), grid.double() + 1e-6, right=True)
    return (after - 1).clamp(min=0)


def resample_video(
    video: Video,
    *,
    fps: float,
    size: int | tuple[int, int] | None = None,
    start: float = 0.0,
    duration: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> Video:
    """:func:`load_video` for frames already in memory: ``video`` on the grid ``start + i / fps``.

    Frame ``j`` of ``video`` is on screen from ``video.times[j]`` until the next one (the last
    for ``1 / video.fps``); each grid time gets the frame on screen then, as :func:`load_video`
    hands out decoded frames. ``duration``, ``size`` and ``dtype`` mean what they mean there, and
    frames are resized with the same scaler (FFmpeg's, area-averaging when shrinking, bicubic
    when enlarging), from 8-bit RGB: float frames that need resizing are rounded to bytes first.
    ``load_video(path, fps=f, size=s)`` equals ``resample_video(load_video(path, fps=f), fps=f,
    size=s)`` where no resizing is needed; with resizing the two differ by the scaler's rounding
    (it converts a file's YUV pixels to RGB while scaling, here RGB is scaled).
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    _check_window(start, duration, what="the frames")
    end = float(video.times[-1]) + 1.0 / video.fps if video.num_frames else 0.0
    count = (round(duration * fps) if duration is not None
             else max(0, math.ceil((end - start - 1e-6) * fps)))
    if count == 0 or start + (count - 1) / fps >= end + WINDOW_TOLERANCE:
        window = (_window_text(start, duration) if duration is not None
                  else f"the window starting at {start:g} s")
        raise MediaError(f"the frames last {end:.2f} s, shorter than {window}")
    times = start + torch.arange(count, dtype=torch.float64) / fps
    source = frames_on_screen(video.times, times)  # [count] into video's frames
    frames, index = video.frames, source
    h, w = frames.shape[-2:]
    scaled_w, scaled_h, crop_w, crop_h = _output_size(w, h, size)
    if (scaled_w, scaled_h, crop_w, crop_h) != (w, h, w, h):
        # resize each distinct frame once, with load_video's scaler, from bytes
        used, index = torch.unique(source, return_inverse=True)
        pixels = frames[used].cpu()
        if pixels.is_floating_point():
            pixels = pixels.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        convert = _FrameConverter(size)
        frames = torch.from_numpy(np.stack([
            convert(av.VideoFrame.from_ndarray(rgb, format="rgb24"))
            for rgb in pixels.permute(0, 2, 3, 1).contiguous().numpy()  # [h, w, 3] each
        ])).permute(0, 3, 1, 2)  # [distinct, 3, h', w'] uint8
    frames = frames[index]
    if dtype == torch.uint8 and frames.is_floating_point():
        frames = frames.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    elif dtype != torch.uint8 and not frames.is_floating_point():
        frames = frames.to(dtype).div_(255.0)
    return Video(frames=frames.to(dtype).contiguous(), times=times,
                 frame_times=video.frame_times[source], fps=float(fps))


# -- files -------------------------------------------------------------------------------------


def find_video(folder: Path, name: str) -> Path | None:
    """The video ``name`` in ``folder``: ``folder / name`` itself, or a file of the same stem
    with one of :data:`VIDEO_SUFFIXES` in either case (``a.mkv`` or ``A.MP4`` where ``a.mp4``
    was named: what a downloader produced; ``name`` may also be a bare stem), or None. A
    temporary v2a is writing is never one (:func:`v2a.files.is_temporary`). Only the candidate
    names are looked up, never a listing of the folder, so a 200k-file folder stays fast."""
    named = folder / name
    stem = named.stem if named.suffix.lower() in VIDEO_SUFFIXES else named.name
    candidates = [named] + [named.with_name(stem + s) for s in VIDEO_SUFFIXES]
    candidates += [named.with_name(stem + s.upper()) for s in VIDEO_SUFFIXES]
    return next((p for p in candidates if p.is_file() and not is_temporary(p)), None)


def media_files(paths: list[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Files named, and files with one of ``suffixes`` inside folders named, sorted; v2a's own
    temporaries (:func:`v2a.files.is_temporary`) inside folders are never listed."""

    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file()
                            and not is_temporary(f))
        elif p.exists():
            found.append(p)
        else:
            raise MediaError(f"{p} does not exist")
    return found


# -- writing -----------------------------------------------------------------------------------


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
) -> Path:
    """Write ``frames [t, h, w, 3]`` uint8 RGB at ``fps`` (and ``audio [c, n]`` float in
    [-1, 1], c = 1 or 2, at ``sample_rate``) as an mp4: H.264 yuv420p + AAC; returns ``path``.

    ``h`` and ``w`` must be even (yuv420p). Frame ``i`` is shown at ``i / fps`` seconds; the
    audio starts at 0. Atomic: written to a temp file in the same folder, then renamed, so an
    interrupted run leaves no half file under ``path``.
    """
    path = Path(path)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"write_video needs even frame sizes for yuv420p, got {w}x{h}")
    with atomic_output(path) as tmp:
        with av.open(tmp, "w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            audio_stream = None
            if audio is not None:
                layout = "mono" if audio.shape[0] == 1 else "stereo"
                audio_stream = out.add_stream("aac", rate=sample_rate, layout=layout)
            for i in range(t):
                frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1) / stream.average_rate
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
            if audio_stream is not None:
                wav = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
                step = 1024
                for i in range(0, wav.shape[1], step):
                    chunk = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(wav[:, i:i + step]), format="fltp", layout=layout
                    )
                    chunk.sample_rate = sample_rate
                    chunk.pts = i
                    chunk.time_base = Fraction(1, sample_rate)
                    for packet in audio_stream.encode(chunk):
                        out.mux(packet)
                for packet in audio_stream.encode(None):
                    out.mux(packet)
    return path


def _audio_frames(audio, sample_rate: int, fmt: str, step: int = 1024):
    """``audio [c, n]`` float in [-1, 1] → AudioFrames of ``step`` samples in ``fmt`` (fltp or s16)."""
    wav = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    layout = "mono" if wav.shape[0] == 1 else "stereo"
    for i in range(0, wav.shape[1], step):
        chunk = wav[:, i:i + step]
        if fmt == "s16":  # packed: one plane of interleaved samples
            data = np.round(chunk.T * 32767.0).astype(np.int16).reshape(1, -1)
        else:
            data = np.ascontiguousarray(chunk)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = i
        frame.time_base = Fraction(1, sample_rate)
        yield frame


GENERATED_BY = "generated by v2a"
"""The ``comment`` tag of every file v2a generates (:func:`write_audio`, :func:`mux_audio`), so
that :func:`generated_by_v2a` tells v2a's outputs from a user's files."""


def generated_by_v2a(path: str | Path) -> bool:
    """Whether ``path`` is a media file whose ``comment`` tag is :data:`GENERATED_BY`; ``False``
    for any other file, one that is missing or cannot be read included."""
    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment") == GENERATED_BY
    except (av.error.FFmpegError, OSError):
        return False


def write_audio(path: str | Path, audio, sample_rate: int) -> Path:
    """Write ``audio [c, n]`` float in [-1, 1] (c = 1 or 2) as 16-bit .wav or .flac, tagged
    :data:`GENERATED_BY`; atomic (a temp file in the same folder, renamed into place)."""
    path = Path(path)
    codecs = {".wav": ("wav", "pcm_s16le"), ".flac": ("flac", "flac")}
    if path.suffix.lower() not in codecs:
        raise MediaError(f"{path}: audio is written as .wav or .flac, not {path.suffix or 'no suffix'}")
    fmt, codec = codecs[path.suffix.lower()]
    audio = np.asarray(audio, dtype=np.float32)
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    with atomic_output(path) as tmp:
        with av.open(tmp, "w", format=fmt) as out:
            out.metadata["comment"] = GENERATED_BY
            stream = out.add_stream(codec, rate=sample_rate, layout=layout)
            stream.format = "s16"
            for frame in _audio_frames(audio, sample_rate, "s16"):
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    return path


# -- a video with new sound --------------------------------------------------------------------

MUX_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
"""The suffixes :func:`mux_audio` writes, and the container format of each. (Not Matroska:
FFmpeg's Matroska writer does not mark AAC's priming and padding, so the sound would not last
exactly as long as it should.)"""

REENCODE_OPTIONS = {"crf": "18"}
"""libx264's settings for a video that cannot be copied: visually lossless for most material."""

_TRIAL_PACKETS = 16  # packets plan_mux reads and test-muxes: past the first B-frame group


@dataclass(frozen=True)
class MuxPlan:
    """What :func:`mux_audio` does with the video of ``video_path`` when writing ``out_path``.

    ``copy_video``: the first video stream is copied packet for packet (bytes unchanged, the
    display matrix kept); otherwise every frame is decoded and re-encoded as H.264 (libx264,
    :data:`REENCODE_OPTIONS`, yuv420p, an odd width or height stretched by one pixel and the
    pixel aspect ratio set to undo it) at its own time, and ``reason`` says why (``""`` when
    copying). ``video_codec``: the input stream's codec (``"h264"``, ``"prores"``...).
    ``frames``: how many video frames the output holds, when known before writing (the whole of a
    video whose header counts them; ``None`` otherwise). ``clip``: whether the output is a clip
    cut from the video, beginning ``start`` seconds into it (0 for the whole video).
    ``duration``: seconds from the output's start to the end of its video (for the whole video,
    the input's from its start to the end of its video); sound lasting as long covers it.

    A plan is path-like (``os.fspath(plan)`` is ``out_path``), so code that used the path
    :func:`mux_audio` once returned keeps working.
    """

    video_path: Path
    out_path: Path
    video_codec: str
    copy_video: bool
    reason: str
    frames: int | None
    duration: float
    clip: bool = False
    start: float = 0.0

    @property
    def message(self) -> str:
        """One line telling the user the video is re-encoded, and why; ``""`` when it is copied."""
        if self.copy_video:
            return ""
        return (f"{self.video_path}: {self.reason}, so {self.out_path.name} gets it re-encoded as "
                f"H.264")

    def __fspath__(self) -> str:
        return str(self.out_path)


def _mux_format(out_path: Path) -> str:
    try:
        return MUX_FORMATS[out_path.suffix.lower()]
    except KeyError:
        raise MediaError(f"{out_path}: a video with sound is written as "
                         f"{', '.join(MUX_FORMATS)}, not {out_path.suffix or 'without a suffix'}"
                         ) from None


def plan_mux(video_path: str | Path, out_path: str | Path, *, start: float = 0.0,
             duration: float | None = None) -> MuxPlan:
    """How :func:`mux_audio` will write ``out_path`` from ``video_path``: cheap (the header and
    the first packets are read, one frame decoded), so a caller knows before generating anything.

    ``start``/``duration`` (seconds) cut a clip of the video, its sound generated for that
    window; by default, and when they cover it, the whole video. The output container comes
    from ``out_path``'s suffix (:data:`MUX_FORMATS`). The whole of a video is copied when that
    container takes its codec and its packets carry presentation times: the format's own codec
    check, then a trial copy of the first packets into memory, so whatever the muxer refuses is
    found here and not after the generation. Otherwise, and for a clip (a copy can only cut at
    key frames), it is re-encoded.

    Raises :class:`MediaError` for an input that cannot get sound at all (those :func:`probe`
    refuses, an audio-only file), a window outside the video, and an output suffix
    :func:`mux_audio` does not write.
    """
    video_path, out_path = Path(video_path), Path(out_path)
    out_format = _mux_format(out_path)
    _check_window(start, duration, what=str(video_path))
    info = probe(video_path)
    if not info.has_video:
        raise MediaError(f"{video_path} has no video stream to add sound to (it holds only audio)")
    with open_media(video_path) as src:
        stream = _video_stream(src)
        end = _video_end(src, stream) or info.duration
        if not start < end or duration is not None and start + duration > end + WINDOW_TOLERANCE:
            window = (_window_text(start, duration) if duration is not None
                      else f"the window starting at {start:g} s")
            raise MediaError(f"{video_path} lasts {end:.2f} s, shorter than {window}")
        packets = []
        for packet in src.demux(stream):
            if packet.size:  # not the empty packet that ends the stream
                packets.append(packet)
            if len(packets) == _TRIAL_PACKETS:
                break
        reason = _copy_refusal(stream, packets, out_format, out_path.suffix.lower().lstrip("."))
        codec = stream.codec_context.name
        if start == 0 and (duration is None or duration >= end - 1e-3):  # all but rounding
            return MuxPlan(video_path=video_path, out_path=out_path, video_codec=codec,
                           copy_video=not reason, reason=reason,
                           frames=_header_frame_count(stream, end), duration=end)
        length = end - start if duration is None else duration
        return MuxPlan(video_path=video_path, out_path=out_path, video_codec=codec,
                       copy_video=False, reason=f"the clip {start:g}-{start + length:g} s is cut "
                       f"from it, which a copy cannot do to the frame", frames=None,
                       duration=length, clip=True, start=start)


def _header_frame_count(stream, seconds: float) -> int | None:
    """The frame count ``stream``'s header states, when it fits the ``seconds`` the video lasts
    at its average rate (an AVI file states ticks of its time base there, which need not be
    frames); ``None`` otherwise."""
    count, rate = stream.frames, stream.average_rate
    if not count or not rate or abs(count - seconds * rate) > max(1.0, 0.01 * count):
        return None
    return count


def _video_end(container, stream) -> float | None:
    """Seconds from the file's start (see :func:`_late_start`) to the end of ``stream``, as its
    header (or the container's) states it; ``None`` when none does."""
    length = _stream_duration(stream)
    if length is None:
        return container.duration / av.time_base if container.duration else None
    return _stream_begins(container, stream) + length


def _copy_refusal(stream, packets: list[av.Packet], out_format: str, label: str) -> str:
    """Why ``stream`` cannot be copied into an ``out_format`` file (``""`` if it can), judged by
    copying its first ``packets`` into one in memory."""
    codec = stream.codec_context.name
    times = [p.pts for p in packets], [p.dts for p in packets]
    if _copy_timing(*times, reorders=bool(stream.codec_context.has_b_frames)) is None:
        return f"its {codec} packets carry no presentation times"
    try:
        with av.open(io.BytesIO(), "w", format=out_format) as trial:
            try:
                copy = trial.add_stream_from_template(stream)
            except ValueError:  # PyAV's word for "the format's codec list lacks it"
                return f"{codec} video cannot be stored in {label}"
            for index, packet in enumerate(packets):
                packet.stream = copy
                packet.pts = packet.dts = index  # any increasing times: the bytes are on trial
                trial.mux(packet)
    except av.error.FFmpegError as exc:
        return f"the {label} writer refuses a copy of its {codec} video ({exc.strerror})"
    return ""


@dataclass(frozen=True)
class _CopyTiming:
    """Timestamps and durations for the copied packets, in decode order, measured from the
    file's start in the input stream's time base divided by ``scale`` (an integer, more than 1
    only to keep frames that share a time apart)."""

    pts: list[int]
    dts: list[int]
    durations: list[int]
    scale: int

    @property
    def end(self) -> int:
        """Where the last frame ends."""
        return max((p + d for p, d in zip(self.pts, self.durations)), default=0)


def _copy_timing(pts: list[int | None], dts: list[int | None], *, reorders: bool,
                 origin: int = 0, end: int | None = None) -> _CopyTiming | None:
    """Timestamps a muxer accepts for packets with these ``pts`` and ``dts`` (a stream's, in
    decode order, without the empty one that ends it) that show every frame when the input
    shows it; ``None`` when the presentation times are unknown without decoding (missing, on a
    stream that ``reorders`` frames). ``origin``: the file's start, in the stream's ticks (see
    :func:`_late_start`); ``end``: the ticks from there to the end of the video, if known.

    * A missing ``pts`` is the ``dts`` (a stream without reordering shows frames as decoded).
    * Frames sharing a presentation time (a Matroska file's millisecond ticks can round two
      frames together) are moved apart by fine ticks, ``1 / scale`` of the input's tick: the one
      decoded later shows a fine tick later and replaces the other on screen.
    * Each frame lasts until the next one; the last until ``end``, or for the typical (median)
      interval between frames when ``end`` is not after it.
    * The input's ``dts`` are kept when they increase and none is after its ``pts``; otherwise
      (Matroska leaves them unset on the first packets of a stream with B-frames) each packet
      gets the presentation time ``delay`` places earlier in presentation order, with ``delay``
      the least that puts no packet's ``dts`` after its ``pts``, continued below the first frame
      at the typical interval.
    """
    if None in pts:
        if reorders or None in dts:
            return None
        pts = [d if p is None else p for p, d in zip(pts, dts)]
    if not pts:
        return _CopyTiming(pts=[], dts=[], durations=[], scale=1)
    scale = max(Counter(pts).values())
    order = sorted(range(len(pts)), key=lambda i: (pts[i], i))  # presentation order
    shown = [0] * len(pts)
    previous = None
    for i in order:
        fine = (pts[i] - origin) * scale
        shown[i] = fine if previous is None or fine > previous else previous + 1
        previous = shown[i]
    ordered = [shown[i] for i in order]
    gaps = [b - a for a, b in itertools.pairwise(ordered) if b - a >= scale]
    step = statistics.median_low(gaps) if gaps else scale
    durations = [0] * len(pts)
    for this, following in itertools.pairwise(order):
        durations[this] = shown[following] - shown[this]
    last = order[-1]
    durations[last] = step if end is None or end * scale <= shown[last] else end * scale - shown[last]
    if None not in dts:
        kept = [(d - origin) * scale for d in dts]
        if (all(a < b for a, b in itertools.pairwise(kept))
                and all(d <= p for d, p in zip(kept, shown))):
            return _CopyTiming(pts=shown, dts=kept, durations=durations, scale=scale)
    rank = {t: r for r, t in enumerate(ordered)}
    delay = max(0, max(i - rank[t] for i, t in enumerate(shown)))
    decode = [ordered[i - delay] if i >= delay else ordered[0] - (delay - i) * step
              for i in range(len(shown))]
    return _CopyTiming(pts=shown, dts=decode, durations=durations, scale=scale)


def _packet_times(path: Path) -> tuple[list[int | None], list[int | None]]:
    """The ``pts`` and ``dts`` of every packet of the first video stream of ``path`` (but the
    empty one that ends it), read without decoding."""
    pts, dts = [], []
    with open_media(path) as src:
        for packet in src.demux(_video_stream(src)):
            if packet.size:
                pts.append(packet.pts)
                dts.append(packet.dts)
    return pts, dts


def mux_audio(
    video_path: str | Path,
    audio,
    sample_rate: int,
    out_path: str | Path,
    plan: MuxPlan | None = None,
    *,
    start: float | None = None,
    duration: float | None = None,
) -> MuxPlan:
    """Write ``out_path``: the first video stream of ``video_path`` and ``audio [c, n]`` float in
    [-1, 1] (c = 1 or 2) at ``sample_rate`` encoded as AAC from the file's start, lasting exactly
    ``n / sample_rate`` seconds (the encoder's priming and padding are marked for decoders to
    drop). Other streams of the input are left out. Tagged :data:`GENERATED_BY`. Atomic: a
    temporary beside ``out_path``, renamed into place.

    The video follows ``plan`` (default: :func:`plan_mux` of the same paths and window; a plan
    made for another name of the same container, such as the final name of a file written under a
    temporary one, will do): copied packet for packet with timestamps a muxer accepts (see
    :func:`_copy_timing`), or decoded and re-encoded as H.264 with every frame at its own time (a
    variable frame rate stays variable) and the input's display matrix, so it plays turned as
    the input does. Either way times are measured from the file's start (a late-starting MPEG-TS
    clock is moved to 0; a clip's start is 0), and the last frame lasts until ``plan.duration``.
    ``start``/``duration`` are :func:`plan_mux`'s, for when no plan is given (with a plan, a
    ``start`` given must be the plan's). Returns the plan
    followed: the one given, unless the stream, read to its end, cannot be copied after all
    (packets without presentation times past the first ones), then a re-encoding plan saying so.
    """
    video_path, out_path = Path(video_path), Path(out_path)
    if plan is None:
        plan = plan_mux(video_path, out_path, start=start or 0.0, duration=duration)
    elif (plan.video_path != video_path or start not in (None, plan.start)
          or _mux_format(plan.out_path) != _mux_format(out_path)):
        raise ValueError(f"the plan is for {plan.video_path} from {plan.start:g} s into "
                         f"{plan.out_path}, not for {video_path} from {start or 0:g} s into "
                         f"{out_path}")
    audio = np.asarray(audio, dtype=np.float32)
    with atomic_output(out_path) as tmp:
        with open_media(video_path) as src, av.open(tmp, "w", format=_mux_format(out_path)) as out:
            out.metadata["comment"] = GENERATED_BY
            video_in = _video_stream(src)
            ticks = video_in.time_base
            origin = round(_late_start(src) / ticks)
            first, end = round(plan.start / ticks), round((plan.start + plan.duration) / ticks)
            timing = _copy_timing(*_packet_times(video_path), origin=origin, end=end,
                                  reorders=bool(video_in.codec_context.has_b_frames))
            if plan.copy_video and timing is None:
                plan = dataclasses.replace(plan, copy_video=False, reason=(
                    f"its {plan.video_codec} packets carry no presentation times"))
            if plan.copy_video:
                video = _copied_video(out, src, video_in, timing)
            else:
                scale = timing.scale if timing is not None else 1
                clip = (first, end) if plan.clip else None
                last_until = ((end - first) * scale if plan.clip
                              else timing.end if timing is not None else end)
                video = _reencoded_video(out, src, video_in, path=video_path, scale=scale,
                                         origin=origin, clip=clip, last_until=last_until)
            sound = _SoundTrack(out=out, audio=audio, sample_rate=sample_rate)
            for packet in _covering_every_frame(video):
                sound.mux_until(float(packet.dts * packet.time_base))
                out.mux(packet)
            sound.mux_until(None)
    return plan


def _covering_every_frame(packets: Iterator[av.Packet]) -> Iterator[av.Packet]:
    """``packets`` (one stream's, in mux order, each with a ``dts`` and the ``duration`` its
    frame is shown), the last one made to last until the track covers every frame.

    mp4 and mov show a track from its first frame for the shorter of two lengths: its decode
    times' (the first ``dts`` to the last one plus that packet's duration) and its frames' (to
    the latest ``pts`` plus duration). Decode times that begin a B-frame delay early, or run at
    other intervals than the frames, would cut the video short: the last packet's duration is
    set so that the decode times' length is the frames' (when that takes a positive one)."""
    first_dts = first_pts = held = None
    end = 0
    for packet in packets:
        if held is not None:
            yield held
        held = packet
        first_dts = packet.dts if first_dts is None else first_dts
        first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
        end = max(end, packet.pts + packet.duration)
    if held is not None:
        tail = end - first_pts - (held.dts - first_dts)
        if tail > 0:
            held.duration = tail
        yield held


def _copied_video(out, src, video_in, timing: _CopyTiming) -> Iterator[av.Packet]:
    """Add a copy of ``video_in`` to ``out``; returns an iterator of its packets retimed by
    ``timing``, to mux."""
    video_out = out.add_stream_from_template(video_in)
    time_base = video_in.time_base / timing.scale
    video_out.time_base = time_base

    def packets():
        demuxed = (packet for packet in src.demux(video_in) if packet.size)
        for packet, pts, dts, duration in zip(demuxed, timing.pts, timing.dts, timing.durations,
                                              strict=True):
            packet.stream = video_out
            packet.time_base, packet.pts, packet.dts = time_base, pts, dts
            packet.duration = duration
            yield packet

    return packets()


def _seek(src, stream, time: int) -> bool:
    """Seek ``src`` to the key frame of ``stream`` before ``time``; False for a file that cannot
    seek (a raw stream), which is left where it was."""
    try:
        src.seek(time, stream=stream, backward=True)
    except av.error.FFmpegError:
        return False
    return True


def _decoded(src, stream, path: Path, *, since: int | None = None) -> Iterator[av.VideoFrame]:
    """The frames of ``stream``, from the one on screen at ``since`` (a time in its time base;
    by default from the first frame), after a seek to the key frame before it; a decoding error
    is a :class:`MediaError` (a damaged file)."""
    if since is not None and _seek(src, stream, since):
        frames = _decoded(src, stream, path)
        first = next(frames, None)
        if first is not None and (first.pts is None or first.pts <= since):
            yield first
            yield from frames
            return
        src.seek(0, stream=stream, backward=True)  # the seek landed past it
    frames = src.decode(stream)
    while True:
        try:
            frame = next(frames, None)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path} is truncated or damaged: decoding its video failed "
                             f"({exc.strerror})") from None
        if frame is None:
            return
        yield frame


def _reencoded_video(out, src, video_in, *, path: Path, scale: int, origin: int,
                     clip: tuple[int, int] | None, last_until: int) -> Iterator[av.Packet]:
    """Add an H.264 stream to ``out`` for the frames of ``video_in``; returns an iterator of its
    packets, to mux, each lasting as long as its frame is shown. Times are the frames' own, from
    ``origin`` (input ticks), in the input's time base divided by ``scale``: a frame not after
    the one before comes a fine tick after it, one without a time a frame interval after it.
    ``clip``: (first, end) input ticks from ``origin``: only the frames on screen then, the
    first one at 0; by default every frame. Each frame lasts until the next one, the last until
    ``last_until`` (output ticks), or a frame interval when that is not after it."""
    video_in.codec_context.thread_type = "AUTO"
    since = None if clip is None or clip[0] == 0 else origin + clip[0]
    frames = _decoded(src, video_in, path, since=since)
    first = next(frames, None)
    if first is None:
        raise MediaError(f"{path} has a video stream with no decodable frames")
    rate = video_in.average_rate or video_in.guessed_rate or Fraction(25)
    width, height = first.width + first.width % 2, first.height + first.height % 2
    video_out = out.add_stream("libx264", rate=rate, options=dict(REENCODE_OPTIONS))
    video_out.width, video_out.height, video_out.pix_fmt = width, height, "yuv420p"
    time_base = video_in.time_base / scale
    video_out.time_base = video_out.codec_context.time_base = time_base
    context = video_out.codec_context
    aspect = (video_in.sample_aspect_ratio or Fraction(1)) * Fraction(
        first.width * height, first.height * width)  # undoes the stretch to even sizes
    if aspect != 1:
        context.sample_aspect_ratio = aspect.limit_denominator(65535)
    convert = dict(width=width, height=height, format="yuv420p", interpolation="BICUBIC",
                   dst_color_range=av.video.reformatter.ColorRange.MPEG)
    if first.format.is_rgb or first.format.has_palette:
        # converted with the BT.601 matrix, and labelled so (6: smpte170m)
        convert["dst_colorspace"] = av.video.reformatter.Colorspace.ITU601
        context.colorspace = 6
    else:
        source = video_in.codec_context
        context.colorspace, context.color_primaries, context.color_trc = (
            source.colorspace, source.color_primaries, source.color_trc)
    context.color_range = av.video.reformatter.ColorRange.MPEG
    matrix = first.side_data.get("DISPLAYMATRIX")
    if matrix is not None:
        video_out.set_display_matrix(np.frombuffer(bytes(matrix)[:36], dtype=np.int32).tolist())
    step = max(1, round(1 / (rate * time_base)))
    begin, end = (0, None) if clip is None else (clip[0] * scale, clip[1] * scale)
    reformatter = av.video.reformatter.VideoReformatter()

    def encoded(frame, time: int) -> list[av.Packet]:
        picture = reformatter.reformat(frame, **convert)
        picture.pts, picture.time_base = time, time_base
        return video_out.encode(picture)

    def shown():
        """(frame, output time) of each frame the output shows, in order."""
        previous = None  # the time of the frame before
        waiting = None  # the last frame at or before ``begin``, shown from 0 once the next comes
        for frame in itertools.chain([first], frames):
            time = None if frame.pts is None else (frame.pts - origin) * scale
            if previous is not None and (time is None or time <= previous):
                time = previous + (step if time is None else 1)
            previous = time = time or 0
            if end is not None and time >= end:
                break
            if clip is not None and time <= begin:
                waiting = frame
                continue
            if waiting is not None:
                yield waiting, 0
                waiting = None
            yield frame, time - begin
        if waiting is not None:
            yield waiting, 0

    def packets():
        lasting = {}  # output time of each frame encoded → how long it is shown
        held = None  # a frame and its time, encoded once the next one's time is known
        for frame, time in itertools.chain(shown(), [(None, None)]):
            if held is not None:
                if time is not None:
                    until = time
                else:
                    until = last_until if last_until > held[1] else held[1] + step
                lasting[held[1]] = until - held[1]
                for packet in encoded(*held):
                    packet.duration = lasting.pop(packet.pts)
                    yield packet
            held = (frame, time)
        for packet in video_out.encode(None):
            packet.duration = lasting.pop(packet.pts)
            yield packet

    return packets()


class _SoundTrack:
    """The AAC track of a muxed file, encoded while the video is written so the two interleave.

    ``audio [c, n]`` is quantised to 16 bits first, as the .wav written beside it is.
    """

    def __init__(self, *, out, audio: np.ndarray, sample_rate: int):
        layout = "mono" if audio.shape[0] == 1 else "stereo"
        self.out = out
        self.stream = out.add_stream("aac", rate=sample_rate, layout=layout)
        self.packets = self._encode(audio, sample_rate, layout)
        self.pending = None

    def _encode(self, audio, sample_rate: int, layout: str):
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        for frame in _audio_frames(audio, sample_rate, "s16"):
            for fltp in resampler.resample(frame):
                yield from self.stream.encode(fltp)
        for fltp in resampler.resample(None):
            yield from self.stream.encode(fltp)
        yield from self.stream.encode(None)

    def mux_until(self, seconds: float | None) -> None:
        """Mux the packets that start before ``seconds`` (all that are left when ``None``)."""
        while True:
            if self.pending is None:
                self.pending = next(self.packets, None)
                if self.pending is None:
                    return
            if seconds is not None and self.pending.pts * self.pending.time_base > seconds:
                return
            self.out.mux(self.pending)
            self.pending = None
