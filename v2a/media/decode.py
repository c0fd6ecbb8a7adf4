"""Decoding: :func:`load_audio` (the first audio stream at a given sample rate) and
:func:`load_video` (the first video stream on a regular time grid, as a :class:`Video`);
:func:`resample_video` puts frames already in memory on a grid by the same rule
(:func:`frames_on_screen`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from v2a.media.probing import (
    WINDOW_TOLERANCE,
    MediaError,
    check_window,
    frame_orientation,
    late_start,
    open_media,
    stream_begins,
    stream_duration,
    video_stream,
    window_text,
)

AUDIO_PREROLL = 0.5  # seconds decoded before an audio window, see load_audio

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
        origin = late_start(container)
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
            stream_end = stream_begins(container, stream) + float(stream.duration
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
                    f"{window_text(start, duration)}"
                )
            wav = wav[:, offset:offset + min(available, wanted)]
            if wav.shape[1] < wanted:
                wav = np.pad(wav, ((0, 0), (0, wanted - wav.shape[1])))
        else:
            wav = wav[:, offset:end]
        return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))


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
        orientation = frame_orientation(frame)
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
    check_window(start, duration, what=str(path))
    with open_media(path) as container:
        stream = video_stream(container)
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
        if duration is None and stream_duration(stream) is None and container.streams.audio:
            header = None  # the container's duration may be the audio's: no evidence either way
    count = len(frames)
    if count == 0 or (duration is not None and count < round(duration * fps)):
        window = (window_text(start, duration) if duration is not None
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
    header = stream_duration(stream)
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
    origin = late_start(container)
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
    ``origin``: the file's start (:func:`late_start`), the 0 of the times."""
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
    check_window(start, duration, what="the frames")
    end = float(video.times[-1]) + 1.0 / video.fps if video.num_frames else 0.0
    count = (round(duration * fps) if duration is not None
             else max(0, math.ceil((end - start - 1e-6) * fps)))
    if count == 0 or start + (count - 1) / fps >= end + WINDOW_TOLERANCE:
        window = (window_text(start, duration) if duration is not None
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
