"""The colour_motion visual encoder: its contracts, and that its features say what they claim on
synthetic scenes: which colour and shape an object has, and at which frame it flashes or
bounces."""

from __future__ import annotations

import math

import pytest
import torch
from v2a_plugins.visual_encoders.colour_motion import ColourMotionConfig, ColourMotionEncoder

from v2a.testing import from_registry, parametrize_with_checks

GREY = (0.5, 0.5, 0.5)
COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.2, 0.9),
           "yellow": (0.95, 0.9, 0.1)}


# -- synthetic scenes -------------------------------------------------------------------------------


def render(size: int, objects, background=GREY) -> torch.Tensor:
    """One ``[3, size, size]`` frame: ``objects`` are ``(shape, cx, cy, radius, rgb)`` in pixels,
    ``shape`` "disc" or "square" (axis-aligned, half side ``radius``), edges antialiased."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    frame = torch.tensor(background).view(3, 1, 1).expand(3, size, size).clone()
    for shape, cx, cy, radius, rgb in objects:
        if shape == "disc":
            distance = torch.hypot(xs - cx, ys - cy)
        else:
            distance = torch.maximum((xs - cx).abs(), (ys - cy).abs())
        cover = (radius - distance + 0.5).clamp(0, 1)  # [size, size]
        frame = frame * (1 - cover) + torch.tensor(rgb).view(3, 1, 1) * cover
    return frame


def video(frames) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of ``[3, h, w]`` frames → ``([1, t, 3, h, w], times [t])`` at 25 fps."""
    stacked = torch.stack(list(frames)).unsqueeze(0)
    return stacked, torch.arange(stacked.shape[1], dtype=torch.float32) / 25.0


def part(encoder: ColourMotionEncoder, values: torch.Tensor, name: str) -> torch.Tensor:
    return values[..., encoder.layout()[name]]


def peaks(signal: torch.Tensor, fraction: float = 0.5) -> list[int]:
    """Frames where ``signal [t]`` is a local maximum above ``fraction`` of its largest value."""
    s = signal.tolist()
    top = max(s)
    return [
        i for i in range(len(s))
        if s[i] > fraction * top and (i == 0 or s[i] >= s[i - 1]) and (i == len(s) - 1 or s[i] > s[i + 1])
    ]


@pytest.fixture
def encoder() -> ColourMotionEncoder:
    return ColourMotionEncoder(ColourMotionConfig()).eval()


# -- conformance ------------------------------------------------------------------------------------


@parametrize_with_checks([
    from_registry("visual_encoder", "colour_motion"),
    from_registry("visual_encoder", "colour_motion", fps=8.0, grid=4, size=32, orientations=0),
])
def test_conformance(factory, check):
    check(factory)


# -- sizes, rates, times ----------------------------------------------------------------------------


def test_dim_layout_rate_and_start(encoder):
    assert encoder.dim == (6 + 4) * 64 + 5 == 645
    assert encoder.frame_size == (64, 64) and encoder.rate == encoder.fps == 25.0
    layout = encoder.layout()
    assert [s.stop - s.start for s in layout.values()] == [192, 256, 192, 1, 1, 3]
    assert max(s.stop for s in layout.values()) == encoder.dim
    frames = torch.rand(2, 7, 3, 64, 64)
    times = 3.0 + torch.arange(7) / 25.0
    out = encoder.encode(frames, times)
    assert out.values.shape == (2, 7, 645) and out.rate == 25.0 and out.start == pytest.approx(3.0)
    batched = encoder.encode(frames, times.expand(2, 7))  # [b, t] times are accepted too
    assert torch.equal(batched.values, out.values) and batched.start == out.start


def test_any_frame_size_is_resized(encoder):
    """A 128×96 frame gives the features of the same picture drawn at 64×64 (cell colours)."""
    big = render(128, [("disc", 40.0, 80.0, 20.0, COLOURS["red"])])[:, :, 16:112]  # [3, 128, 96]
    small = torch.nn.functional.interpolate(big.unsqueeze(0), size=(64, 64), mode="area")[0]
    a = encoder.encode(*video([big]))
    b = encoder.encode(*video([small]))
    colour = lambda out: part(encoder, out.values, "colour")  # noqa: E731
    assert (colour(a) - colour(b)).abs().max() < 0.02
    assert encoder.encode(*video([big])).values.shape == (1, 1, 645)


def test_colour_cells_say_where_the_colour_is(encoder):
    """The square fills exactly cell (row 2, column 5): that cell is red, the others grey."""
    frame = render(64, [("square", 5 * 8 + 4.0, 2 * 8 + 4.0, 4.0, COLOURS["red"])])
    colour = part(encoder, encoder.encode(*video([frame])).values, "colour").view(3, 8, 8)
    assert torch.allclose(colour[:, 2, 5], torch.tensor(COLOURS["red"]), atol=1e-6)
    others = torch.ones(8, 8, dtype=torch.bool)
    others[2, 5] = False
    assert torch.allclose(colour[:, others], torch.tensor(GREY).view(3, 1), atol=1e-6)


# -- motion -----------------------------------------------------------------------------------------


def test_static_scene_has_zero_motion(encoder):
    frame = render(64, [("disc", 20.0, 30.0, 9.0, COLOURS["blue"]), ("square", 45.0, 40.0, 7.0, COLOURS["yellow"])])
    frame = frame + 0.1 * torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))  # texture
    values = encoder.encode(*video([frame] * 12)).values
    for name in ("motion", "motion_energy", "reversal", "reversal_colour"):
        assert torch.count_nonzero(part(encoder, values, name)) == 0, name
    assert part(encoder, values, "shape").sum() > 0  # the appearance is still there


def test_flashes_peak_at_their_frames(encoder):
    """A disc that flashes white at frames 5, 17 and 30 and fades back (halving each frame):
    every motion feature peaks exactly there."""
    flashes = (5, 17, 30)
    frames = []
    for t in range(40):
        level = max((0.5 ** (t - k) for k in flashes if t >= k), default=0.0)
        rgb = tuple(c + (1 - c) * level for c in COLOURS["green"])
        frames.append(render(64, [("disc", 30.0, 34.0, 10.0, rgb)]))
    values = encoder.encode(*video(frames)).values[0]
    assert peaks(part(encoder, values, "motion_energy")[:, 0]) == list(flashes)
    assert peaks(part(encoder, values, "motion").sum(-1)) == list(flashes)
    # brightening then fading back is a turn too, at the flash frame
    assert peaks(part(encoder, values, "reversal")[:, 0]) == list(flashes)


def bouncing(positions, size=64, shape="disc", rgb=COLOURS["red"], vertical=False):
    frames = []
    for p in positions:
        cx, cy = (32.0, p) if vertical else (p, 32.0)
        frames.append(render(size, [(shape, cx, cy, 7.0, rgb)]))
    return frames


def test_bounces_between_walls_peak_in_reversal_not_in_motion(encoder):
    """A disc moving at 2.5 px/frame between two walls, turning at frames 10, 24 and 38: the
    reversal feature peaks exactly at those frames and is zero where the motion goes on; the
    motion energy, flat while the disc moves, cannot tell the bounces."""
    period, speed = 14, 2.5
    positions = []
    for t in range(48):
        phase = (t - 10) % (2 * period)  # 0 at a turn on the right wall
        positions.append(45.0 - speed * min(phase, 2 * period - phase))
    turns = [t for t in range(48) if (t - 10) % period == 0]
    assert turns == [10, 24, 38]
    values = encoder.encode(*video(bouncing(positions))).values[0]
    reversal = part(encoder, values, "reversal")[:, 0]
    assert peaks(reversal) == turns
    away = [t for t in range(1, 47) if min(abs(t - k) for k in turns) > 1]
    assert float(reversal[away].max()) < 0.2 * float(reversal.max())
    energy = part(encoder, values, "motion_energy")[1:, 0]
    assert float(energy.min()) > 0.5 * float(energy.max())  # moving all the time, evenly


def test_a_ball_falling_under_gravity_peaks_at_the_impact():
    """A ball dropped from rest hits the floor at frame 12 and again at frame 28 (an elastic
    bounce, in 128×128 frames, resized by the encoder): reversal peaks at the impacts only, not
    at the top of the flight where the ball turns slowly."""
    encoder = ColourMotionEncoder(ColourMotionConfig())
    top, floor, drop, half = 20.0, 110.0, 12, 8  # falls 12 frames; then 8 up, 8 down
    g = (floor - top) / drop**2  # half the acceleration, px / frame²
    positions = []
    for t in range(36):
        if t <= drop:
            positions.append(top + g * t**2)
        else:
            s = (t - drop) % (2 * half)  # frames since the last impact
            positions.append(floor - g * s * (2 * half - s))
    impacts = (drop, drop + 2 * half)
    frames = [render(128, [("disc", 64.0, y, 12.0, COLOURS["blue"])]) for y in positions]
    values = encoder.encode(*video(frames)).values[0]
    assert peaks(part(encoder, values, "reversal")[:, 0], fraction=0.3) == list(impacts)


def test_reversal_colour_says_which_object_turned_back(encoder):
    """A red disc bouncing between walls (turns at frames 10 and 24) beside a dim blue square
    that flashes at frame 17 (full brightness, then fading back over two frames): at each event
    the reversal colour is the colour of the object that made it."""
    frames = []
    for t in range(30):
        phase = (t - 10) % 28
        x = 45.0 - 2.5 * min(phase, 28 - phase)
        level = {17: 1.0, 18: 0.7, 19: 0.5}.get(t, 0.3)
        blue = tuple(level * c for c in COLOURS["blue"])
        frames.append(render(64, [("disc", x, 20.0, 7.0, COLOURS["red"]),
                                  ("square", 32.0, 50.0, 6.0, blue)]))
    values = encoder.encode(*video(frames)).values[0]
    colour = part(encoder, values, "reversal_colour")  # [t, 3]
    red, blue = torch.tensor(COLOURS["red"]), torch.tensor(COLOURS["blue"])
    assert float(colour[17].sub(blue).abs().max()) < 0.02  # a flash turns back on the object (its
    # antialiased edge blends in a little grey)
    for t in (10, 24):  # a bounce turns back on the disc's edges: red and the grey around it
        assert (colour[t] - red).norm() < (colour[t] - blue).norm(), t
    # between events only the disc moves: pixels its antialiased edge grazes turn back a little
    moving = [t for t in range(1, 29) if t != 17]
    assert all((colour[t] - red).norm() < (colour[t] - blue).norm() for t in moving)


# -- appearance ---------------------------------------------------------------------------------------


def scene_features(encoder, gen, shape, rgb):
    """Pooled appearance of one random frame: an object of ``shape`` and ``rgb`` at a random
    place and size on grey, plus a second random object elsewhere."""
    radius = 6.0 + 6.0 * float(torch.rand(1, generator=gen))
    cx, cy = (14.0 + 36.0 * torch.rand(2, generator=gen)).tolist()
    frame = render(64, [(shape, cx, cy, radius, rgb)])
    out = encoder.encode(*video([frame])).values[0, 0]
    colour = out[encoder.layout()["colour"]].view(3, -1)  # [3, cells]
    shape_energy = out[encoder.layout()["shape"]].view(encoder.config.orientations, -1).sum(-1)
    return colour, shape_energy


def nearest_centroid_accuracy(train: dict, test: dict) -> float:
    centroids = {label: torch.stack(xs).mean(0) for label, xs in train.items()}
    right = total = 0
    for label, xs in test.items():
        for x in xs:
            guess = min(centroids, key=lambda c: float((x - centroids[c]).norm()))
            right += guess == label
            total += 1
    return right / total


def test_colours_are_told_apart_by_nearest_centroid(encoder):
    """The colour of an object (red, green, blue, yellow) at random places and sizes, from the
    cell colours pooled over the frame (deviation from the median cell, normalised): a
    nearest-centroid classifier fitted on 8 scenes per colour labels 24 new ones per colour
    without a mistake."""
    gen = torch.Generator().manual_seed(0)

    def sample(name):
        colour, _ = scene_features(encoder, gen, "disc", COLOURS[name])
        deviation = (colour - colour.median(dim=1, keepdim=True).values).sum(dim=1)
        return deviation / deviation.norm()

    train = {name: [sample(name) for _ in range(8)] for name in COLOURS}
    test = {name: [sample(name) for _ in range(24)] for name in COLOURS}
    assert nearest_centroid_accuracy(train, test) == 1.0


def test_squares_and_discs_are_told_apart_by_nearest_centroid(encoder):
    """Squares and discs of one colour at random places and sizes, from the orientation
    energies pooled over the cells (normalised to sum 1): a nearest-centroid classifier is
    always right, and the square's energy sits in the 0° and 90° bins."""
    gen = torch.Generator().manual_seed(1)

    def sample(shape):
        _, energy = scene_features(encoder, gen, shape, COLOURS["yellow"])
        return energy / energy.sum()

    train = {shape: [sample(shape) for _ in range(8)] for shape in ("square", "disc")}
    test = {shape: [sample(shape) for _ in range(24)] for shape in ("square", "disc")}
    assert nearest_centroid_accuracy(train, test) == 1.0
    square = torch.stack(train["square"]).mean(0)
    disc = torch.stack(train["disc"]).mean(0)
    assert float(square[0] + square[2]) > 0.9
    assert float(disc.min()) > 0.15


# -- misuse -----------------------------------------------------------------------------------------


def test_bad_inputs_and_options_are_rejected(encoder):
    with pytest.raises(ValueError, match=r"\[b, t, 3, h, w\]"):
        encoder.encode(torch.rand(2, 3, 64, 64), torch.arange(2.0))
    with pytest.raises(ValueError, match="4 frames but 3 times"):
        encoder.encode(torch.rand(1, 4, 3, 64, 64), torch.arange(3.0))
    with pytest.raises(ValueError, match="multiple of grid"):
        ColourMotionConfig(size=60, grid=8)
    assert math.isfinite(encoder.encode(torch.rand(1, 0, 3, 64, 64), torch.zeros(0)).start)
