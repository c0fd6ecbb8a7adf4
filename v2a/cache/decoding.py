"""Decoding clips for the feature cache and live training data, in worker processes.

:func:`decode_clip` decodes what a :class:`DecodeRequest` asks for from one clip (or says why
it cannot be used); :func:`decoded_clips` does it for many clips, in order, in DataLoader
worker processes. Importing this module makes forking after decoding safe (see below).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from v2a.features import FrameRequest, WindowFrames, window_frames
from v2a.items import Skipped
from v2a.manifests import Clip
from v2a.media import MediaError, load_audio

# A process that decoded video and then forks (DataLoader workers) must not let the child's
# garbage collector free PyAV objects inherited from the parent: PyAV 18 keeps every decoded
# frame in a reference cycle (frame <-> side data), and freeing one whose scaler ran with
# slice threads waits, in the child, on threads that exist only in the parent (a hang seen in
# forked workers). Objects alive at a fork are frozen for the child's collector (Python's own
# advice before fork, which also keeps memory shared) and unfrozen in the parent at once, unless
# the program had frozen objects itself.
_FROZE_FOR_FORK = []


def _freeze_before_fork() -> None:
    _FROZE_FOR_FORK.append(gc.get_freeze_count() == 0)
    gc.freeze()


def _unfreeze_after_fork() -> None:
    if _FROZE_FOR_FORK and _FROZE_FOR_FORK.pop():
        gc.unfreeze()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_freeze_before_fork, after_in_parent=_unfreeze_after_fork,
                        after_in_child=_FROZE_FOR_FORK.clear)


@dataclass(frozen=True)
class DecodeRequest:
    """What to decode from each clip: audio at ``(sample_rate, channels)`` pairs and video at
    ``(fps, frame_size)`` pairs (:data:`~v2a.features.FrameRequest`), over a window of
    ``window`` seconds."""

    window: float
    audio: tuple[tuple[int, int], ...]
    video: tuple[FrameRequest, ...]


@dataclass
class Decoded:
    """One clip's media: ``audio[(sr, c)]``: ``[c, n]`` float32; ``video[(fps, size)]``:
    ``(frames [t, 3, h, w] uint8, times [t] float64 s from the window's start)``."""

    clip: Clip
    audio: dict[tuple[int, int], Tensor]
    video: dict[FrameRequest, WindowFrames]


def decode_clip(clip: Clip, root: Path | None, request: DecodeRequest) -> Decoded | Skipped:
    """Decode what ``request`` asks for from ``clip``, or say why the clip cannot be used.

    Bad media (missing, empty, truncated, not a video, no video stream, no audio, shorter than
    the window) and any other failure of the decoder become :class:`~v2a.items.Skipped`, so that
    one bad file never stops a run over thousands.
    """
    path = clip.resolve(root)
    window = request.window
    if clip.duration is not None and clip.duration < window - 1e-6:
        return Skipped(clip, f"{path}: the manifest gives the clip {clip.duration:g} s, shorter "
                             f"than the window of {window:g} s")
    try:
        audio = {
            (sr, ch): load_audio(path, sample_rate=sr, channels=ch, start=clip.start,
                                 duration=window)
            for sr, ch in request.audio
        }
        video = {  # as bytes: a quarter of the memory of floats, on the way to the encoders
            wanted: window_frames(path, wanted, start=clip.start, duration=window,
                                  dtype=torch.uint8)
            for wanted in request.video
        }
    except MediaError as exc:
        return Skipped(clip, str(exc))
    except Exception as exc:  # a decoder failure nobody foresaw: skip the clip, say what it was
        return Skipped(clip, f"{path}: decoding failed ({type(exc).__name__}: {exc})")
    return Decoded(clip, audio, video)


class DecodeSet(torch.utils.data.Dataset):
    """Clips → :class:`Decoded` (or :class:`Skipped`), for a DataLoader's worker processes."""

    def __init__(self, clips: Sequence[Clip], root: Path | None, request: DecodeRequest):
        self.clips, self.root, self.request = list(clips), root, request

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Decoded | Skipped:
        return decode_clip(self.clips[index], self.root, self.request)


def _as_is(item):
    return item


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)


def decoded_clips(clips: Sequence[Clip], root: Path | None, request: DecodeRequest,
                  workers: int) -> Iterator[Decoded | Skipped]:
    """Decode ``clips`` in order, in ``workers`` processes (0: in this one)."""
    if not clips:
        return iter(())
    loader = torch.utils.data.DataLoader(
        DecodeSet(clips, root, request), batch_size=None, shuffle=False, num_workers=workers,
        collate_fn=_as_is, worker_init_fn=_one_thread if workers else None,
        prefetch_factor=4 if workers else None,
    )
    return iter(loader)
