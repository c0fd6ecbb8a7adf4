"""Media input and output through PyAV. Nothing else in v2a opens media files.

Errors a user can cause (a missing, empty, truncated or non-media file, a file without the
stream asked for) raise :class:`MediaError` with one sentence naming the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from v2a.errors import UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")


class MediaError(UserError):
    """A media file that cannot be used, with the reason."""


def open_media(path: str | Path) -> av.container.InputContainer:
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
        raise MediaError(f"{path} is not a media file PyAV can read ({exc.strerror})") from None


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
    (AAC) is trimmed to the stream's duration.
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
        if start > 0:
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
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
            raise MediaError(f"{path} is damaged: decoding its audio failed ({exc.strerror})") from None
        if not chunks:
            raise MediaError(f"{path} has an audio stream with no decodable samples")
        wav = np.concatenate(chunks, axis=1)[:channels]
        offset = max(0, round((start - (first_time or 0.0)) * sample_rate))
        end = None
        if stream.duration is not None and stream.time_base is not None:
            end = round(float(stream.duration * stream.time_base) * sample_rate) - round(
                (first_time or 0.0) * sample_rate
            )
        if duration is not None:
            window_end = offset + round(duration * sample_rate)
            end = window_end if end is None else min(end, window_end)
        return torch.from_numpy(np.ascontiguousarray(wav[:, offset:end], dtype=np.float32))


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
