"""The video :meth:`~v2a.generate.VideoToAudio.generate` reads: a file or frames in memory
(:func:`video_source`), and the stretch of it asked for (:func:`checked_stretch`)."""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from v2a.generate.errors import GenerationError
from v2a.generate.windows import WINDOW_TOLERANCE
from v2a.media import Video, probe


def video_source(video: str | Path | Tensor | Video, fps: float | None = None) -> Path | Video:
    """What :meth:`VideoToAudio.generate` reads: a file's path as it is, or frames in memory as
    a :class:`~v2a.media.Video` on the CPU whose times start at 0.

    * ``str`` / ``Path``: a video file (``fps`` must be None: the file has its frame times);
    * uint8 ``[t, h, w, 3]``: RGB bytes, frame ``i`` shown from ``i / fps`` s;
    * float ``[t, 3, h, w]`` in [0, 1]: the same, in v2a's layout;
    * a :class:`~v2a.media.Video` (float or uint8 ``[t, 3, h, w]``): its frames at its own times,
      counted from its first frame; ``fps``, if given, must be its own.
    """
    if isinstance(video, (str, Path)):
        if fps is not None:
            raise GenerationError(f"fps is given for frames in memory; the file {video} has its "
                                  "own frame times")
        return Path(video)
    if isinstance(video, Video):
        if fps is not None and float(fps) != video.fps:
            raise GenerationError(f"fps={fps:g} was given for a Video at {video.fps:g} fps; leave "
                                  "fps out (a Video has its own frame times)")
        frames, times, frame_times, rate = video.frames, video.times, video.frame_times, video.fps
    elif isinstance(video, Tensor):
        frames, rate = _tensor_frames(video, fps)
        times = frame_times = torch.arange(video.shape[0], dtype=torch.float64) / rate
    else:
        raise GenerationError(f"a video is a file's path, a tensor of frames or a v2a.media.Video, "
                              f"not {type(video).__name__}")
    if frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
        raise GenerationError(f"the frames must be [t, 3, h, w] with t > 0, not {list(frames.shape)}")
    if frames.is_floating_point() and not (0.0 <= float(frames.min()) and float(frames.max()) <= 1.0):
        raise GenerationError(f"float frames must lie in [0, 1], these span {float(frames.min()):g} "
                              f"to {float(frames.max()):g} (give bytes as uint8 [t, h, w, 3])")
    first = float(times[0])
    return Video(frames=frames.cpu(), times=times.double().cpu() - first,
                 frame_times=frame_times.double().cpu() - first, fps=rate)


def _tensor_frames(video: Tensor, fps: float | None) -> tuple[Tensor, float]:
    """Frames ``[t, 3, h, w]`` and their rate from a tensor of uint8 ``[t, h, w, 3]`` or float
    ``[t, 3, h, w]`` frames shown ``fps`` times a second."""
    if fps is None or not float(fps) > 0:
        raise GenerationError("frames given as a tensor need their frame rate, a positive fps "
                              "(e.g. generate(frames, fps=25.0))")
    if video.dim() == 4 and video.dtype == torch.uint8 and video.shape[-1] == 3:
        return rearrange(video, "t h w c -> t c h w"), float(fps)
    if video.dim() == 4 and video.is_floating_point() and video.shape[1] == 3:
        return video, float(fps)
    raise GenerationError(f"frames must be a uint8 tensor [t, h, w, 3] or a float tensor "
                          f"[t, 3, h, w] in [0, 1], not {video.dtype} {list(video.shape)}")


def checked_stretch(source: Path | Video, start: float, duration: float | None
                    ) -> tuple[str, float]:
    """``(name, duration)`` of the stretch ``[start, start + duration]`` s of ``source`` (what
    :func:`video_source` returns): ``name`` says what it is in messages, ``duration`` defaults
    to the rest of the video. Refuses, in one sentence, a file without a video stream, a
    ``start`` outside the video and a ``duration`` that is not positive or ends after it (by
    more than :data:`~v2a.generate.windows.WINDOW_TOLERANCE`)."""
    if isinstance(source, Video):
        name, length = "the frames", source.duration
    else:
        info = probe(source)
        if not info.has_video:
            raise GenerationError(f"{source} has no video stream")
        name, length = str(source), info.video_duration or info.duration
    if not 0 <= start < length:
        raise GenerationError(f"--start {start:g} s is not inside {name} ({length:.2f} s)")
    if duration is None:
        return name, length - start
    if not duration > 0:
        raise GenerationError(f"--duration must be positive, got {duration:g}")
    if start + duration > length + WINDOW_TOLERANCE:
        raise GenerationError(f"{start:g} s + --duration {duration:g} s ends after {name} "
                              f"({length:.2f} s)")
    return name, duration
