"""A video with new sound: :func:`plan_mux` decides, from the header and the first packets, whether
the input's video stream is copied packet for packet or re-encoded as H.264 (:class:`MuxPlan`);
:func:`mux_audio` writes the file, atomically."""

from __future__ import annotations

import dataclasses
import io
import itertools
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from v2a.files import atomic_output
from v2a.media.probing import (
    WINDOW_TOLERANCE,
    MediaError,
    check_window,
    late_start,
    open_media,
    probe,
    stream_begins,
    stream_duration,
    video_stream,
    window_text,
)
from v2a.media.write import audio_frames, generated_tags

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
    check_window(start, duration, what=str(video_path))
    info = probe(video_path)
    if not info.has_video:
        raise MediaError(f"{video_path} has no video stream to add sound to (it holds only audio)")
    with open_media(video_path) as src:
        stream = video_stream(src)
        end = _video_end(src, stream) or info.duration
        if not start < end or duration is not None and start + duration > end + WINDOW_TOLERANCE:
            window = (window_text(start, duration) if duration is not None
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
    """Seconds from the file's start (see :func:`late_start`) to the end of ``stream``, as its
    header (or the container's) states it; ``None`` when none does."""
    length = stream_duration(stream)
    if length is None:
        return container.duration / av.time_base if container.duration else None
    return stream_begins(container, stream) + length


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
    :func:`late_start`); ``end``: the ticks from there to the end of the video, if known.

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
        for packet in src.demux(video_stream(src)):
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
    prompt: str | None = None,
    negative_prompt: str | None = None,
) -> MuxPlan:
    """Write ``out_path``: the first video stream of ``video_path`` and ``audio [c, n]`` float in
    [-1, 1] (c = 1 or 2) at ``sample_rate`` encoded as AAC from the file's start, lasting exactly
    ``n / sample_rate`` seconds (the encoder's priming and padding are marked for decoders to
    drop). Other streams of the input are left out. Tagged :data:`GENERATED_BY` (with the text
    ``prompt`` and ``negative_prompt`` when given, :func:`generated_tags`). Atomic: a
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
            out.metadata.update(generated_tags(prompt=prompt, negative_prompt=negative_prompt))
            video_in = video_stream(src)
            ticks = video_in.time_base
            origin = round(late_start(src) / ticks)
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


def _h264_stream(out, video_in, first: av.VideoFrame, *, rate: Fraction,
                 time_base: Fraction) -> tuple[av.video.stream.VideoStream, dict]:
    """Add the H.264 stream that re-encodes ``video_in`` (whose first frame is ``first``) to
    ``out``, in ``time_base``; returns it and the ``VideoReformatter.reformat`` arguments that
    turn a decoded frame into its input: yuv420p in the MPEG range at even sizes (an odd width or
    height stretched by one pixel, the pixel aspect ratio set to undo it), the input's colour
    description kept (RGB and palette sources converted with BT.601 and labelled so), and the
    input's display matrix, so the output plays turned as the input does."""
    width, height = first.width + first.width % 2, first.height + first.height % 2
    video_out = out.add_stream("libx264", rate=rate, options=dict(REENCODE_OPTIONS))
    video_out.width, video_out.height, video_out.pix_fmt = width, height, "yuv420p"
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
    return video_out, convert


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
    time_base = video_in.time_base / scale
    video_out, convert = _h264_stream(out, video_in, first, rate=rate, time_base=time_base)
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
        for frame in audio_frames(audio, sample_rate, "s16"):
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
