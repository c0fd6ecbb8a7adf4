"""Media files in and out through PyAV. Nothing else in v2a opens media files.

The package's modules: :mod:`~v2a.media.probing` (opening a file, :func:`probe`, the times and
orientation of its streams, window checks), :mod:`~v2a.media.decode` (:func:`load_audio`,
:func:`load_video`, :func:`resample_video`), :mod:`~v2a.media.resample` (:func:`resample_audio`),
:mod:`~v2a.media.write` (:func:`write_video`, :func:`write_audio`), :mod:`~v2a.media.mux`
(:func:`plan_mux`, :func:`mux_audio`) and :mod:`~v2a.media.discovery` (:func:`media_files`,
:func:`find_video`). Import the names below from ``v2a.media`` itself: that is the media API.

* :func:`load_audio` — the first audio stream → ``[c, n]`` float at a given sample rate.
* :func:`load_video` — the first video stream → :class:`Video` frames ``[t, 3, h, w]`` sampled
  at a target frame rate on the grid ``start + i / fps``, with the presentation time of the
  source frame shown at each grid time (variable frame rate is handled: each grid time gets the
  frame on screen then). :func:`resample_video` does the same for frames already in memory.
* :func:`resample_audio` — a waveform in memory ``[..., n]`` to another sample rate (torch, any
  device).
* :func:`probe` — what a file holds (:class:`MediaInfo`), from its header and first frame.
* :func:`write_video` — RGB frames (+ audio) → an H.264/AAC mp4, atomically.
* :func:`write_audio` — a waveform → a 16-bit .wav or .flac, atomically, tagged as v2a's
  (:func:`generated_tags`: the text prompt it was generated from, if any, read back by
  :func:`generated_prompt` and :func:`generated_negative_prompt`).
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

from v2a.media.decode import (
    AUDIO_PREROLL,
    Video,
    frames_on_screen,
    load_audio,
    load_video,
    resample_video,
)
from v2a.media.discovery import AUDIO_SUFFIXES, VIDEO_SUFFIXES, find_video, media_files
from v2a.media.mux import MUX_FORMATS, REENCODE_OPTIONS, MuxPlan, mux_audio, plan_mux
from v2a.media.probing import WINDOW_TOLERANCE, MediaError, MediaInfo, open_media, probe
from v2a.media.resample import resample_audio
from v2a.media.write import (
    GENERATED_BY,
    generated_by_v2a,
    generated_negative_prompt,
    generated_prompt,
    generated_tags,
    write_audio,
    write_video,
)

__all__ = [
    "AUDIO_PREROLL", "AUDIO_SUFFIXES", "GENERATED_BY", "MUX_FORMATS", "REENCODE_OPTIONS",
    "VIDEO_SUFFIXES", "WINDOW_TOLERANCE", "MediaError", "MediaInfo", "MuxPlan", "Video",
    "find_video", "frames_on_screen", "generated_by_v2a", "generated_negative_prompt",
    "generated_prompt", "generated_tags", "load_audio",
    "load_video", "media_files", "mux_audio", "open_media", "plan_mux", "probe",
    "resample_audio", "resample_video", "write_audio", "write_video",
]
