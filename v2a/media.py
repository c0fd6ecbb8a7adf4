"""Media input (and one writer) through PyAV. Nothing else in v2a opens media files.

* :func:`load_audio` — the first audio stream → ``[c, n]`` float at a given sample rate.
* :func:`load_video` — the first video stream → :class:`Video` frames ``[t, 3, h, w]`` sampled
  at a target frame rate on the grid ``start + i / fps``, with the presentation time of the
  source frame shown at each grid time (variable frame rate is handled: each grid time gets the
  frame on screen then). :func:`resample_video` does the same for frames already in memory.
* :func:`probe` — what a file holds (:class:`MediaInfo`), from its header and first frame.
* :func:`write_video` — the one writer: RGB frames (+ audio) → an H.264/AAC mp4, atomically.

Times are the file's presentation timestamps in seconds (0 is the start of the file for almost
every file; a stream starting later holds its first frame / begins its samples at its own time).

Rotation: the display matrix a phone writes (frame side data in PyAV 18, also behind
``VideoFrame.rotation``) is applied as ffmpeg's own ``autorotate`` does — right-angle rotations
and the mirrorings combined with them — so frames come out upright and ``width``/``height`` are
the displayed ones. An angle that is not a multiple of 90 degrees is rounded to the nearest
one (ffmpeg would rotate by the exact angle and pad the corners).

Errors a user can cause (a missing, empty, truncated or non-media file, a file without the
stream asked for, a file shorter than the window asked for) raise :class:`MediaError` with one
sentence naming the file and the problem; a dataset catches it, skips the clip and reports it.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from v2a.errors import UserError

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
        if start > AUDIO_PREROLL:
            # a decoder's first frame after a seek lacks its overlap with the previous one (AAC,
            # MP3, Opus): land early enough that it falls before the window
            target = int((start - AUDIO_PREROLL) / stream.time_base)
            container.seek(target, stream=stream, backward=True)
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        try:
            for frame in container.decode(stream):
                if first_time is None:
                    first_time = float(frame.time) if frame.time is not None else 0.0
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
            end = min(end, round(float(stream.duration * stream.time_base) * sample_rate)
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


def probe(path: str | Path) -> MediaInfo:
    """What ``path`` holds: streams, duration, frame rate, displayed size, rotation."""
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
            try:
                first = next(container.decode(video), None)
            except av.error.FFmpegError as exc:
                raise MediaError(f"{path} is truncated or damaged: decoding its first video "
                                 f"frame failed ({exc.strerror})") from None
            if first is None:
                raise MediaError(f"{path} has a video stream with no decodable frames")
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
    ``start``, so a late window does not decode the file from its beginning.

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
    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"the window must start at or after 0 s and last a positive time, "
                         f"got start={start}, duration={duration}")
    path = Path(path)
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
    if start > 0:
        container.seek(int(start / stream.time_base), stream=stream, backward=True)
        result = _walk(container, stream, path, fps, convert, start, duration, after_seek=True)
        if result is not None:
            return result
        container.seek(0, stream=stream, backward=True)  # the seek landed past the start
    return _walk(container, stream, path, fps, convert, start, duration, after_seek=False)


def _walk(container, stream, path, fps, convert, start, duration, *, after_seek: bool):
    """One pass of :func:`_decode_grid`; ``None`` if, after a seek, the first frame is late."""
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
            time = float(frame.time) if frame.time is not None else end
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
    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"the window must start at or after 0 s and last a positive time, "
                         f"got start={start}, duration={duration}")
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


def media_files(paths: list[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Files named, and files with one of ``suffixes`` inside folders named, sorted."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file())
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
    from fractions import Fraction

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


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[str]:
    """A temporary file beside ``path`` to write to; renamed to ``path`` when the block ends
    normally and removed when it raises, so nobody ever sees a half-written ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the result private
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _audio_frames(audio, sample_rate: int, fmt: str, step: int = 1024):
    """``audio [c, n]`` float in [-1, 1] → AudioFrames of ``step`` samples in ``fmt`` (fltp or s16)."""
    from fractions import Fraction

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


def write_audio(path: str | Path, audio, sample_rate: int) -> Path:
    """Write ``audio [c, n]`` float in [-1, 1] (c = 1 or 2) as 16-bit .wav or .flac; atomic
    (a temp file in the same folder, renamed into place)."""
    path = Path(path)
    codecs = {".wav": ("wav", "pcm_s16le"), ".flac": ("flac", "flac")}
    if path.suffix.lower() not in codecs:
        raise MediaError(f"{path}: audio is written as .wav or .flac, not {path.suffix or 'no suffix'}")
    fmt, codec = codecs[path.suffix.lower()]
    audio = np.asarray(audio, dtype=np.float32)
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    with atomic_output(path) as tmp:
        with av.open(tmp, "w", format=fmt) as out:
            stream = out.add_stream(codec, rate=sample_rate, layout=layout)
            stream.format = "s16"
            for frame in _audio_frames(audio, sample_rate, "s16"):
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def mux_audio(video_path: str | Path, audio, sample_rate: int, out_path: str | Path) -> Path:
    """Write ``out_path`` (mp4): the first video stream of ``video_path`` copied packet for
    packet (bytes unchanged) and ``audio [c, n]`` float in [-1, 1] encoded as AAC. Other streams
    of the input are left out. Atomic (temp file in the same folder, renamed into place)."""
    video_path, out_path = Path(video_path), Path(out_path)
    audio = np.asarray(audio, dtype=np.float32)
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    with atomic_output(out_path) as tmp:
        with open_media(video_path) as src, av.open(tmp, "w", format="mp4") as out:
            video_in = _video_stream(src)
            if video_in is None:
                raise MediaError(f"{video_path} has no video stream")
            video_out = out.add_stream_from_template(video_in)
            audio_out = out.add_stream("aac", rate=sample_rate, layout=layout)
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
            for packet in src.demux(video_in):
                if packet.dts is None:  # the demuxer's flush packet
                    continue
                packet.stream = video_out
                out.mux(packet)
            for frame in _audio_frames(audio, sample_rate, "s16"):
                for fltp in resampler.resample(frame):
                    for packet in audio_out.encode(fltp):
                        out.mux(packet)
            for fltp in resampler.resample(None):
                for packet in audio_out.encode(fltp):
                    out.mux(packet)
            for packet in audio_out.encode(None):
                out.mux(packet)
    return out_path
