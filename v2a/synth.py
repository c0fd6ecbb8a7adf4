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
per file, ``label`` = the classes shown joined by ``+``) and ``DIR/events.jsonl`` (one line per
event: ``{"clip": id, "time": seconds, "class": name}``, ``id`` being the manifest's clip id).
Everything is deterministic for a seed (clip ``k`` draws from ``numpy.random.default_rng([seed,
k])``, so a larger ``--clips`` adds clips without changing the earlier ones).

Scoring (pure functions of waveforms and event lists, used by ``v2a evaluate``):

* :func:`detect_onsets` — spectral flux onset detection with peak picking;
* :func:`match_onsets` / :func:`onset_f1` / :func:`mean_onset_offset` — one-to-one matching
  within a tolerance (default ±50 ms), F1, mean absolute offset of matched pairs;
* :func:`estimate_class` / :func:`class_accuracy` — each detected event's class from the dominant
  frequency just after its onset, compared with the class of the matched true event;
* :func:`score_clip` — all of the above for one clip.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2a.errors import UserError

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


def synth_clip(seed: int, index: int, *, seconds: float = 4.0, fps: float = 25.0, size: int = 64,
               sample_rate: int = 16000) -> SynthClip:
    """Clip ``index`` of the dataset of ``seed`` (pure, deterministic)."""
    rng = np.random.default_rng([seed, index])
    n_frames = round(seconds * fps)
    objects = _layout(rng, n_frames, fps, size)
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


def clip_id(index: int) -> str:
    return f"clip{index:04d}"


def write_synth(out: str | Path, clips: int, seed: int, *, seconds: float = 4.0,
                fps: float = 25.0, size: int = 64, sample_rate: int = 16000,
                split: str = "train", silent: bool = False) -> Path:
    """Write the dataset (clips, ``manifest.csv``, ``events.jsonl``) to ``out``; returns it.
    ``silent``: videos without their sound (inputs for ``v2a generate``; the events stay)."""
    from v2a.data import Clip, write_manifest, write_text_atomic
    from v2a.media import write_video

    check_options(clips=clips, seconds=seconds, fps=fps, size=size, sample_rate=sample_rate)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, lines = [], []
    for k in range(clips):
        clip = synth_clip(seed, k, seconds=seconds, fps=fps, size=size, sample_rate=sample_rate)
        name = f"{clip_id(k)}.mp4"
        write_video(out / name, clip.frames, fps, None if silent else clip.audio, sample_rate)
        label = "+".join(o.cls.name for o in clip.objects)
        row = Clip(path=name, start=0.0, duration=seconds, label=label, split=split)
        rows.append(row)
        lines += [json.dumps({"clip": row.id, "time": e.time, "class": e.cls}) for e in clip.events]
    write_text_atomic(out / "events.jsonl", "".join(line + "\n" for line in lines))
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


def check_options(*, clips: int, seconds: float, fps: float, size: int, sample_rate: int) -> None:
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


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

N_FFT = 512  # samples at 16 kHz: 32 ms windows (scaled with the sample rate)
HOP = 0.004  # seconds between analysis frames
COMPRESSION = 100.0  # log(1 + C * |X|) magnitude compression
THRESHOLD = 0.15  # a peak must reach this fraction of the clip's strongest flux ...
MIN_FLUX = 0.5  # ... and this absolute flux (a silent or near-silent clip has no onsets)
MIN_DISTANCE = 0.08  # seconds between two detected onsets (the stronger one wins)


def _mono(wav) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float64)
    return wav.mean(axis=0) if wav.ndim == 2 else wav


def onset_strength(wav, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral flux of ``wav`` (``[n]`` or ``[c, n]``): (frame times s, flux per frame).

    Hann windows of ``N_FFT * sample_rate / 16000`` samples every :data:`HOP` s, magnitudes
    compressed as ``log(1 + COMPRESSION * |X| / window sum)``, flux = sum over bins of the
    positive frame-to-frame increase. Frame times are the windows' right edges minus a quarter
    window (where a sharp onset's flux peaks), so times are not late by half a window.
    """
    x = _mono(wav)
    n_fft = max(64, round(N_FFT * sample_rate / 16000))
    hop = max(1, round(HOP * sample_rate))
    x = np.concatenate([np.zeros(n_fft), x, np.zeros(n_fft)])
    starts = np.arange(0, len(x) - n_fft + 1, hop)
    window = np.hanning(n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[starts] * window
    mag = np.log1p(COMPRESSION * np.abs(np.fft.rfft(frames, axis=1)) / window.sum())
    flux = np.maximum(0.0, np.diff(mag, axis=0)).sum(axis=1)
    times = (starts[1:] + n_fft * 0.75) / sample_rate - n_fft / sample_rate
    return times, flux


def detect_onsets(wav, sample_rate: int, *, threshold: float = THRESHOLD,
                  min_flux: float = MIN_FLUX, min_distance: float = MIN_DISTANCE) -> np.ndarray:
    """Onset times (seconds, increasing) of ``wav`` by spectral flux and peak picking.

    A frame is an onset when its flux is the maximum within ±``min_distance`` seconds and at
    least ``max(threshold * strongest flux, min_flux)``. Parameters: see the module constants.
    """
    times, flux = onset_strength(wav, sample_rate)
    if flux.size == 0 or flux.max() <= 0:
        return np.zeros(0)
    floor = max(threshold * flux.max(), min_flux)
    reach = max(1, round(min_distance / HOP))
    padded = np.pad(flux, reach, constant_values=-np.inf)
    local_max = np.lib.stride_tricks.sliding_window_view(padded, 2 * reach + 1).max(axis=1)
    peaks = np.flatnonzero((flux >= floor) & (flux >= local_max))
    kept: list[int] = []
    for p in peaks:  # plateaus: keep the first frame of equal neighbours
        if not kept or p - kept[-1] > reach:
            kept.append(int(p))
    return np.clip(times[kept], 0.0, None)


def match_onsets(detected, truth, tolerance: float = 0.05) -> list[tuple[int, int]]:
    """One-to-one pairs ``(i_detected, j_truth)`` with ``|detected[i] - truth[j]| <= tolerance``.

    Greedy, closest pairs first (the usual onset-evaluation matching; with events farther apart
    than twice the tolerance it is optimal). Pairs are sorted by ``j``.
    """
    detected, truth = np.asarray(detected, dtype=float), np.asarray(truth, dtype=float)
    candidates = sorted(
        (abs(d - t), i, j) for i, d in enumerate(detected) for j, t in enumerate(truth)
        if abs(d - t) <= tolerance + 1e-9
    )
    used_i, used_j, pairs = set(), set(), []
    for _, i, j in candidates:
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            pairs.append((i, j))
    return sorted(pairs, key=lambda p: p[1])


def onset_f1(detected, truth, tolerance: float = 0.05) -> float:
    """F1 of detected onsets against true ones (seconds), matched within ±``tolerance``.

    Both empty: 1.0; one empty: 0.0.
    """
    n_d, n_t = len(detected), len(truth)
    if n_d == 0 and n_t == 0:
        return 1.0
    if n_d == 0 or n_t == 0:
        return 0.0
    hits = len(match_onsets(detected, truth, tolerance))
    return 2 * hits / (n_d + n_t)


def mean_onset_offset(detected, truth, tolerance: float = 0.05) -> float:
    """Mean absolute offset (seconds) of the matched pairs; NaN when nothing matches."""
    pairs = match_onsets(detected, truth, tolerance)
    if not pairs:
        return float("nan")
    return float(np.mean([abs(detected[i] - truth[j]) for i, j in pairs]))


def dominant_frequency(wav, sample_rate: int, time: float, *, start: float = 0.01,
                       length: float = 0.06) -> float:
    """The strongest frequency (Hz) of ``wav`` from ``time + start`` for ``length`` seconds."""
    x = _mono(wav)
    a = max(0, round((time + start) * sample_rate))
    piece = x[a:a + round(length * sample_rate)]
    if len(piece) < 16:
        return float("nan")
    n = 1 << (max(len(piece), 4096) - 1).bit_length()  # zero padding: fine frequency grid
    spectrum = np.abs(np.fft.rfft(piece * np.hanning(len(piece)), n))
    spectrum[: max(1, round(100 * n / sample_rate))] = 0  # ignore DC and rumble below 100 Hz
    return float(np.argmax(spectrum) * sample_rate / n)


def estimate_class(wav, sample_rate: int, time: float) -> str:
    """The class whose fundamental is nearest (in semitones) to the dominant frequency."""
    f = dominant_frequency(wav, sample_rate, time)
    if not f > 0:
        return ""
    return min(CLASSES, key=lambda c: abs(math.log(f / c.frequency))).name


def class_accuracy(wav, sample_rate: int, detected, truth: list[Event],
                   tolerance: float = 0.05) -> float:
    """Share of matched detected onsets whose estimated class is the true event's class.

    NaN when no detected onset matches a true one.
    """
    pairs = match_onsets(detected, [e.time for e in truth], tolerance)
    if not pairs:
        return float("nan")
    right = sum(estimate_class(wav, sample_rate, detected[i]) == truth[j].cls for i, j in pairs)
    return right / len(pairs)


def score_clip(wav, sample_rate: int, truth: list[Event], tolerance: float = 0.05) -> dict:
    """Onset F1, mean absolute offset (s) and class accuracy of ``wav`` against ``truth``."""
    detected = detect_onsets(wav, sample_rate)
    times = [e.time for e in truth]
    return {
        "onset_f1": onset_f1(detected, times, tolerance),
        "onset_offset": mean_onset_offset(detected, times, tolerance),
        "class_accuracy": class_accuracy(wav, sample_rate, detected, truth, tolerance),
        "detected": len(detected),
        "events": len(truth),
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
