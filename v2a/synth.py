"""A synthetic audio-visual sync benchmark: visible events cause sounds.

``v2a synth --out DIR --clips N --seed S`` writes ``N`` short mp4 clips (H.264 + AAC). Each clip
shows one or two objects on a dark background; an object's *appearance* (one of
:data:`CLASSES`: red disc, green square, blue triangle, yellow bar) decides the *pitch/timbre*
of its sound, and its *motion* decides the *onset times*:

* ``bounce``: the object falls and bounces on the floor; it touches the floor exactly at the
  frames of its events (parabolic hops in between);
* ``flash``: the object stays put, dim, and lights up at full brightness exactly at the frames
  of its events (fading over the next two frames).

Events fall on the frame grid (``frame / fps`` seconds), at least :data:`MIN_GAP` apart within
a clip (whichever object makes them), random per clip. The sound of an event is a short
decaying tone (2 ms attack, exponential decay) at its class's fundamental plus a class-specific
mix of harmonics; the tones are mixed and the clip peak-normalised to 0.9.

Files: ``DIR/clipNNNN.mp4``, ``DIR/manifest.csv`` (the repository's manifest format, one clip
per file, ``label`` = the classes shown joined by ``+``, ``caption`` = the objects in words),
``DIR/events.jsonl`` (one line per event: ``{"clip": id, "time": seconds, "class": name}``,
``id`` being the manifest's clip id) and ``DIR/captions.csv`` (see below). Everything is
deterministic for a seed (clip ``k`` draws from ``numpy.random.default_rng([seed, k])``, so a
larger ``--clips`` adds clips without changing the earlier ones).

Captions (:func:`synth_caption`): a clip's caption names its objects, left to right, with their
motion: ``a red disc bouncing and a blue triangle flashing``. ``--caption-missing P`` leaves a
share ``P`` of the clips without a caption, ``--caption-wrong Q`` gives a share ``Q`` a wrong
one, naming as many objects of classes the clip does not show; which clips these are is drawn
from a generator of its own (``default_rng([seed, k, CAPTION_STREAM])``), so the shares never
change the clips themselves. ``captions.csv`` holds the truth, a row per clip: ``clip`` (the
id), ``caption`` (what the clip shows, always), ``given`` (the manifest's caption, empty when
missing) and ``caption_wrong`` (1 when ``given`` is wrong, else 0); read it with
:func:`read_synth_captions`, or give it to ``v2a evaluate --captions`` to score against the
truth.

The events are scored by :mod:`v2a.metrics.onsets` (``v2a evaluate``'s synthetic benchmark):
:data:`FUNDAMENTALS` gives it each class's fundamental, by which it tells the classes apart.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2a.errors import UserError
from v2a.files import write_text_atomic
from v2a.manifests import Clip, write_manifest
from v2a.media import write_video

# ---------------------------------------------------------------------------------------------
# Classes and constants
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoundClass:
    """One kind of object: how it looks and how it sounds."""

    name: str
    colour: tuple[int, int, int]  # RGB 0..255
    shape: str  # disc | square | triangle | bar
    frequency: float  # fundamental, Hz
    harmonics: tuple[float, ...]  # amplitudes of 2f, 3f, ... relative to the fundamental


CLASSES: tuple[SoundClass, ...] = (
    SoundClass("red_disc", (230, 40, 40), "disc", 330.0, (0.3,)),
    SoundClass("green_square", (40, 210, 60), "square", 520.0, (0.5, 0.25)),
    SoundClass("blue_triangle", (50, 90, 240), "triangle", 820.0, ()),
    SoundClass("yellow_bar", (235, 215, 40), "bar", 1300.0, (0.2,)),
)
CLASS_NAMES = tuple(c.name for c in CLASSES)
#: Class name → fundamental frequency (Hz): what the onset metrics classify a sound by
#: (:func:`v2a.metrics.onsets.estimate_class`).
FUNDAMENTALS: dict[str, float] = {c.name: c.frequency for c in CLASSES}

MIN_GAP = 0.16  # seconds between two events of a clip (at least)
EDGE = 0.2  # no event in the first / last EDGE seconds
ATTACK = 0.002  # seconds of linear attack of a tone
DECAY = 0.07  # time constant (s) of a tone's exponential decay
TONE_LENGTH = 0.4  # seconds a tone lasts before it is cut (exp(-0.4 / 0.07) ≈ 0.3 %)
BACKGROUND = 30  # grey level of the background
FLOOR = 90  # grey level of the floor line
DIM = 0.3  # brightness of a flashing object between flashes


class SynthError(UserError):
    """Bad options for ``v2a synth``."""

    exit_code = 2


@dataclass(frozen=True)
class Event:
    """One sound-making event: ``time`` seconds into the clip, of class ``cls`` (a name)."""

    time: float
    cls: str


@dataclass(frozen=True)
class SynthObject:
    cls: SoundClass
    motion: str  # bounce | flash
    column: int  # horizontal centre, pixels
    frames: tuple[int, ...]  # event frames


@dataclass
class SynthClip:
    """One generated clip: ``frames [t, h, w, 3]`` uint8, ``audio [1, n]`` float32."""

    frames: np.ndarray
    audio: np.ndarray
    events: list[Event]
    objects: list[SynthObject]
    fps: float
    sample_rate: int


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def _event_frames(rng: np.random.Generator, n_frames: int, fps: float, count: int) -> list[int]:
    """``count`` random frames at least MIN_GAP apart, inside the clip's edges (fewer if full)."""
    gap = math.ceil(MIN_GAP * fps - 1e-9)
    lo, hi = math.ceil(EDGE * fps), n_frames - 1 - math.ceil(EDGE * fps)
    chosen: list[int] = []
    candidates = np.arange(lo, hi + 1)
    for _ in range(count):
        free = [f for f in candidates if all(abs(f - c) >= gap for c in chosen)]
        if not free:
            break
        chosen.append(int(rng.choice(free)))
    return sorted(chosen)


def _layout(rng: np.random.Generator, n_frames: int, fps: float, size: int) -> list[SynthObject]:
    n_objects = int(rng.integers(1, 3))
    classes = rng.choice(len(CLASSES), size=n_objects, replace=False)
    per_object = [int(rng.integers(2, 5)) for _ in range(n_objects)]
    frames = _event_frames(rng, n_frames, fps, sum(per_object))
    rng.shuffle(frames)  # deal the frames out to the objects, round robin
    objects = []
    for k in range(n_objects):
        mine = tuple(sorted(frames[k::n_objects]))
        if not mine:  # a clip too short for two objects' events
            continue
        column = size // 2 if n_objects == 1 else (size // 4 if k == 0 else 3 * size // 4)
        motion = "bounce" if rng.random() < 0.5 else "flash"
        objects.append(SynthObject(CLASSES[int(classes[k])], motion, column, mine))
    return objects


def _mask(shape: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean ``[size, size]`` mask of a shape centred at (cy, cx) with half-size ``r``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dy, dx = y - cy, x - cx
    if shape == "disc":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if shape == "triangle":  # apex up, base at cy + r
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    if shape == "bar":
        return (np.abs(dy) <= r * 0.4) & (np.abs(dx) <= r * 1.3)
    raise ValueError(shape)


def floor_row(size: int) -> int:
    """The first row of the floor line."""
    return size - size // 8


def object_radius(size: int) -> float:
    """The half-size of an object (pixels)."""
    return size / 10


HALF_HEIGHT = {"disc": 1.0, "square": 0.85, "triangle": 1.0, "bar": 0.4}  # × object_radius


def rest_centre(shape: str, size: int) -> float:
    """The centre row of an object of ``shape`` whose bottom touches the floor."""
    return floor_row(size) - HALF_HEIGHT[shape] * object_radius(size)


def bounce_height(t: float, event_times: list[float], top: float, end: float) -> float:
    """Height (pixels above the floor) of a bouncing object at time ``t``.

    0 exactly at the event times; parabolic hops between events; before the first event it
    falls from ``top``; after the last one it rises to ``top`` and stays there.
    """
    first, last = event_times[0], event_times[-1]
    if t <= first:
        return top * (1 - (t / first) ** 2) if first > 0 else 0.0
    if t >= last:
        s = min(1.0, (t - last) / 0.3)
        return top * (1 - (1 - s) ** 2)
    for a, b in zip(event_times, event_times[1:]):
        if a <= t <= b:
            s = (t - a) / (b - a)
            return min(top, 4 * top * s * (1 - s) * min(1.0, (b - a) / 0.5))
    return 0.0


def _draw(objects: list[SynthObject], n_frames: int, fps: float, size: int) -> np.ndarray:
    frames = np.full((n_frames, size, size, 3), BACKGROUND, dtype=np.uint8)
    floor = floor_row(size)
    frames[:, floor:floor + max(1, size // 32)] = FLOOR
    r = object_radius(size)
    top = floor - 2 * r - size // 8  # highest centre the hops reach, in pixels above rest
    for obj in objects:
        colour = np.array(obj.cls.colour, dtype=np.float64)
        times = [f / fps for f in obj.frames]
        rest_y = rest_centre(obj.cls.shape, size)  # centre when touching the floor
        for i in range(n_frames):
            if obj.motion == "bounce":
                cy, level = rest_y - bounce_height(i / fps, times, top * 0.7, n_frames / fps), 1.0
            else:
                cy = rest_y - top * 0.4
                since = [i - f for f in obj.frames if 0 <= i - f <= 2]
                level = DIM if not since else (1.0, 0.7, 0.5)[min(since)]
            mask = _mask(obj.cls.shape, size, cy, obj.column, r)
            frames[i][mask] = np.round(colour * level).astype(np.uint8)
    return frames


def tone(cls: SoundClass, sample_rate: int) -> np.ndarray:
    """The sound of one event of ``cls``: ``[TONE_LENGTH * sample_rate]`` float, peak ≈ 1."""
    t = np.arange(round(TONE_LENGTH * sample_rate)) / sample_rate
    wave = np.sin(2 * np.pi * cls.frequency * t)
    for k, amp in enumerate(cls.harmonics, start=2):
        if k * cls.frequency < sample_rate / 2 * 0.9:
            wave += amp * np.sin(2 * np.pi * k * cls.frequency * t)
    envelope = np.minimum(1.0, t / ATTACK) * np.exp(-t / DECAY)
    return wave * envelope / (1 + sum(cls.harmonics))


def clip_objects(seed: int, index: int, *, seconds: float = 4.0, fps: float = 25.0,
                 size: int = 64) -> list[SynthObject]:
    """The objects of clip ``index`` of the dataset of ``seed``, left to right, without drawing
    the clip (the same as :func:`synth_clip`'s)."""
    return _layout(np.random.default_rng([seed, index]), round(seconds * fps), fps, size)


def synth_clip(seed: int, index: int, *, seconds: float = 4.0, fps: float = 25.0, size: int = 64,
               sample_rate: int = 16000) -> SynthClip:
    """Clip ``index`` of the dataset of ``seed`` (pure, deterministic)."""
    n_frames = round(seconds * fps)
    objects = clip_objects(seed, index, seconds=seconds, fps=fps, size=size)
    events = sorted((Event(round(f / fps, 6), o.cls.name) for o in objects for f in o.frames),
                    key=lambda e: e.time)
    n = round(seconds * sample_rate)
    audio = np.zeros(n, dtype=np.float64)
    by_name = {c.name: c for c in CLASSES}
    for event in events:
        wave = tone(by_name[event.cls], sample_rate)
        at = round(event.time * sample_rate)
        piece = wave[: max(0, n - at)]
        audio[at:at + len(piece)] += piece
    peak = np.abs(audio).max()
    if peak > 0:
        audio *= 0.9 / peak
    frames = _draw(objects, n_frames, fps, size)
    return SynthClip(frames, audio[None].astype(np.float32), events, objects, fps, sample_rate)


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------

CAPTION_STREAM = 1  # the third word of a clip's caption generator's seed (see the module's docstring)
MOTIONS = ("bounce", "flash")
MOTION_WORDS = {"bounce": "bouncing", "flash": "flashing"}


@dataclass(frozen=True)
class SynthCaption:
    """A clip's caption: ``shown`` says what the clip shows; ``given`` is what its manifest row
    holds (None: missing); ``wrong`` says that ``given`` names objects the clip does not show."""

    shown: str
    given: str | None
    wrong: bool


def describe(objects: Sequence[tuple[SoundClass, str]]) -> str:
    """``[(red disc, "bounce"), (blue triangle, "flash")]`` → ``a red disc bouncing and a blue
    triangle flashing``: each object's class (colour, shape) and motion, in the order given."""
    return " and ".join(f"a {cls.name.replace('_', ' ')} {MOTION_WORDS[motion]}"
                        for cls, motion in objects)


def synth_caption(seed: int, index: int, objects: Sequence[SynthObject], *,
                  missing: float = 0.0, wrong: float = 0.0) -> SynthCaption:
    """The caption of clip ``index`` of the dataset of ``seed``, whose objects are ``objects``:
    with probability ``missing`` none, with probability ``wrong`` one naming as many objects of
    other classes (with random motions), else the description of ``objects``. Deterministic: the
    draws come from ``default_rng([seed, index, CAPTION_STREAM])``."""
    rng = np.random.default_rng([seed, index, CAPTION_STREAM])
    shown = describe([(o.cls, o.motion) for o in objects])
    draw = rng.random()
    if draw < missing:
        return SynthCaption(shown=shown, given=None, wrong=False)
    if draw < missing + wrong:
        others = [c for c in CLASSES if c not in {o.cls for o in objects}]
        picked = rng.choice(len(others), size=len(objects), replace=False)
        motions = rng.choice(len(MOTIONS), size=len(objects))
        given = describe([(others[int(c)], MOTIONS[int(m)]) for c, m in zip(picked, motions)])
        return SynthCaption(shown=shown, given=given, wrong=True)
    return SynthCaption(shown=shown, given=shown, wrong=False)


def _captions_csv(rows: list[tuple[str, SynthCaption]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["clip", "caption", "given", "caption_wrong"])
    for clip, caption in rows:
        writer.writerow([clip, caption.shown, caption.given or "", int(caption.wrong)])
    return buffer.getvalue()


def read_synth_captions(path: str | Path) -> dict[str, SynthCaption]:
    """``captions.csv`` (as :func:`write_synth` writes it) → clip id → its caption."""
    rows = csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8")))
    return {row["clip"]: SynthCaption(shown=row["caption"], given=row["given"] or None,
                                      wrong=row["caption_wrong"] == "1") for row in rows}


def clip_id(index: int) -> str:
    return f"clip{index:04d}"


def write_synth(out: str | Path, clips: int, seed: int, *, seconds: float = 4.0,
                fps: float = 25.0, size: int = 64, sample_rate: int = 16000,
                split: str = "train", silent: bool = False, caption_missing: float = 0.0,
                caption_wrong: float = 0.0) -> Path:
    """Write the dataset (clips, ``manifest.csv``, ``events.jsonl``, ``captions.csv``) to
    ``out``; returns it. ``silent``: videos without their sound (inputs for ``v2a generate``;
    the events stay). ``caption_missing`` and ``caption_wrong``: the chance that a clip's
    caption is missing or wrong (:func:`synth_caption`)."""
    check_options(clips=clips, seconds=seconds, fps=fps, size=size, sample_rate=sample_rate,
                  caption_missing=caption_missing, caption_wrong=caption_wrong)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, lines, captions = [], [], []
    for k in range(clips):
        clip = synth_clip(seed, k, seconds=seconds, fps=fps, size=size, sample_rate=sample_rate)
        name = f"{clip_id(k)}.mp4"
        write_video(out / name, clip.frames, fps, None if silent else clip.audio, sample_rate)
        label = "+".join(o.cls.name for o in clip.objects)
        caption = synth_caption(seed, k, clip.objects, missing=caption_missing,
                                wrong=caption_wrong)
        row = Clip(path=name, start=0.0, duration=seconds, label=label, split=split,
                   caption=caption.given)
        rows.append(row)
        captions.append((row.id, caption))
        lines += [json.dumps({"clip": row.id, "time": e.time, "class": e.cls}) for e in clip.events]
    write_text_atomic(out / "events.jsonl", "".join(line + "\n" for line in lines))
    write_text_atomic(out / "captions.csv", _captions_csv(captions))
    write_manifest(rows, out / "manifest.csv")
    return out


def read_events(path: str | Path) -> dict[str, list[Event]]:
    """``events.jsonl`` → clip id → its events in time order."""
    found: dict[str, list[Event]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            found.setdefault(row["clip"], []).append(Event(float(row["time"]), row["class"]))
    return {k: sorted(v, key=lambda e: e.time) for k, v in found.items()}


def check_options(*, clips: int, seconds: float, fps: float, size: int, sample_rate: int,
                  caption_missing: float = 0.0, caption_wrong: float = 0.0) -> None:
    for option, share in (("--caption-missing", caption_missing),
                          ("--caption-wrong", caption_wrong)):
        if not 0 <= share <= 1:
            raise SynthError(f"{option} must be a fraction between 0 and 1, got {share:g}")
    if caption_missing + caption_wrong > 1:
        raise SynthError(f"--caption-missing and --caption-wrong must add up to at most 1, got "
                         f"{caption_missing:g} + {caption_wrong:g}")
    if clips < 1:
        raise SynthError(f"--clips must be at least 1, got {clips}")
    if not 1.0 <= seconds <= 600:
        raise SynthError(f"--seconds must be between 1 and 600, got {seconds:g}")
    if not 5 <= fps <= 120:
        raise SynthError(f"--fps must be between 5 and 120, got {fps:g}")
    if size < 16 or size % 2:
        raise SynthError(f"--size must be an even number of pixels, at least 16, got {size}")
    if sample_rate < 8000:
        raise SynthError(f"--sample-rate must be at least 8000 Hz, got {sample_rate}")
