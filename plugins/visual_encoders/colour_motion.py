"""``colour_motion``: what a video shows and when it changes, per frame, with no weights.

A visual encoder for machines that cannot download CLIP or S3D, and a transparent baseline on
benchmarks where an object's colour and shape decide a sound and its motion (a bounce, a flash)
decides when the sound starts. Every feature is a fixed, documented function of the pixels:
no parameters, no randomness.

Each frame is resized to ``size × size`` (bilinear, antialiased; ``frame_size`` asks for it
already) and divided into ``grid × grid`` cells. Per frame ``t`` the feature vector is, in
this order (:meth:`ColourMotionEncoder.layout` gives the slices):

* ``colour`` ``[3, grid, grid]``: the mean RGB of each cell (appearance: *what colour, where*).
* ``shape`` ``[orientations, grid, grid]``: a coarse histogram of gradient orientations per
  cell, as in HOG (Dalal & Triggs 2005): at every pixel the gradient (central differences) of
  the colour channel where it is strongest, its orientation modulo 180° shared linearly between
  the two nearest of ``orientations`` bins, its magnitude summed per cell and divided by the
  cell's side, so that a straight edge of contrast ``c`` crossing a cell adds about ``c``. An
  axis-aligned square puts its energy in the 0° and 90° bins, a disc spreads it evenly.
* ``motion`` ``[3, grid, grid]``: ``|colour[t] - colour[t - 1]|`` per cell (zero at ``t = 0``):
  where the picture changed since the previous frame. A flash, an appearance, or an object
  entering a cell peaks here at the frame where it happens.
* ``motion_energy`` ``[1]``: the mean absolute pixel difference from the previous frame at
  ``size × size`` (zero at ``t = 0``), which also sees motion inside a cell that leaves the
  cell's mean unchanged.
* ``reversal`` ``[1]``: how much of the motion turns back at frame ``t``:
  ``sqrt(max(0, -mean(d[t] · d[t + 1])))`` with ``d[t] = frame[t] - frame[t - 1]`` per pixel
  at ``size × size`` (zero at the first and last frame). Per pixel, not per cell, because an
  object that merely passes through a cell also makes that cell's colour rise then fall. A
  bounce undoes at ``t + 1`` the change each moving edge made at ``t``, so it peaks
  at the frame of the bounce (the extreme position), where ``motion`` stays flat; a flash
  that fades back peaks at its first frame too; a steady motion or a lasting change gives
  zero. It looks one frame ahead, which an offline encoder may.
* ``reversal_colour`` ``[3]``: *what* turns back at frame ``t``: the mean RGB of frame ``t``
  over the pixels whose motion turns back there, each weighted by how much
  (``max(0, -d[t] · d[t + 1])`` per pixel, channels summed); zero where nothing turns back.
  With two objects on screen, ``reversal`` says *when* one of them bounced or flashed, this
  says which (a bounce's moving edges mix the object's colour with the background's). Between
  events it follows whatever moves, since pixels grazed by a moving antialiased edge turn back
  a little too; at a bounce or a flash the object that makes it dominates.

``dim = (6 + orientations) · grid² + 5`` (645 at the defaults). The output is one step per
input frame at ``rate = fps``, starting at ``times[0]``. A static scene gives exactly zero in
``motion``, ``motion_energy`` and ``reversal``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from v2a import ComponentSpec, FeatureSequence, VisualEncoder, hookimpl

# -- config ---------------------------------------------------------------------------------------


@dataclass
class ColourMotionConfig:
    """Options of ``visual: {plugin: colour_motion, ...}``."""

    fps: float = 25.0
    """frames per second it reads, and features per second it returns"""
    grid: int = 8
    """cells per side"""
    size: int = 64
    """frames are resized to size x size; a multiple of grid"""
    orientations: int = 4
    """gradient orientation bins per cell (0: no shape features)"""

    def __post_init__(self) -> None:
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be a positive number, got {self.fps}")
        if self.grid <= 0 or self.size <= 0:
            raise ValueError(f"grid and size must be positive, got {self.grid} and {self.size}")
        if self.size % self.grid:
            raise ValueError(f"size ({self.size}) must be a multiple of grid ({self.grid})")
        if self.orientations < 0:
            raise ValueError(f"orientations must be >= 0, got {self.orientations}")


def feature_width(config: ColourMotionConfig) -> int:
    """``dim``: per cell colour, orientations and motion, then 5 frame-wide values."""
    return (6 + config.orientations) * config.grid**2 + 5


def colour_motion_properties(config: ColourMotionConfig) -> dict:
    """The attributes of the encoder ``config`` builds, known without building it
    (``ComponentSpec.properties``)."""
    return {"fps": float(config.fps), "rate": float(config.fps),
            "frame_size": (config.size, config.size), "dim": feature_width(config)}


# -- features -------------------------------------------------------------------------------------


def orientation_energy(images: Tensor, bins: int, cell: int) -> Tensor:
    """``images: [n, 3, s, s]`` → gradient energy per orientation bin and cell
    ``[n, bins, s / cell, s / cell]`` (HOG-style, unsigned orientations, linear binning)."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2  # [n, 3, s, s]
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    magnitude = torch.hypot(gx, gy)
    # keep, per pixel, the gradient of the channel where it is strongest: [n, 1, s, s]
    best, best_x, best_y = magnitude[:, :1], gx[:, :1], gy[:, :1]
    for c in range(1, images.shape[1]):
        stronger = magnitude[:, c : c + 1] > best
        best = torch.where(stronger, magnitude[:, c : c + 1], best)
        best_x = torch.where(stronger, gx[:, c : c + 1], best_x)
        best_y = torch.where(stronger, gy[:, c : c + 1], best_y)
    magnitude = best
    angle = torch.atan2(best_y, best_x) % math.pi  # unsigned orientation in [0, π)
    position = angle * (bins / math.pi)  # bin centres at 0, π / bins, ...
    lower = position.floor()
    upper_share = position - lower
    lower = lower.long() % bins
    energy = images.new_zeros(images.shape[0], bins, *images.shape[-2:])  # [n, bins, s, s]
    energy.scatter_add_(1, lower, magnitude * (1 - upper_share))
    energy.scatter_add_(1, (lower + 1) % bins, magnitude * upper_share)
    # summed per cell, divided by the cell side: an edge of contrast c across a cell gives ~c
    return reduce(energy, "n o (gh ch) (gw cw) -> n o gh gw", "sum", ch=cell, cw=cell) / cell


class ColourMotionEncoder(VisualEncoder):
    """Per-frame cell colours, gradient orientations and frame-to-frame change.

    ``frames [b, t, 3, h, w]`` in [0, 1] → ``[b, t, dim]`` at ``fps``.
    """

    def __init__(self, config: ColourMotionConfig | None = None):
        super().__init__()
        config = config if config is not None else ColourMotionConfig()
        self.config = config
        self.fps = float(config.fps)
        self.rate = float(config.fps)
        self.frame_size = (config.size, config.size)
        self.dim = feature_width(config)

    def layout(self) -> dict[str, slice]:
        """Where each feature lies in the ``dim`` axis: ``colour``, ``shape``, ``motion``,
        ``motion_energy``, ``reversal``, ``reversal_colour`` (cell features are channel-major,
        then row, column)."""
        cells = self.config.grid**2
        widths = {"colour": 3 * cells, "shape": self.config.orientations * cells,
                  "motion": 3 * cells, "motion_energy": 1, "reversal": 1, "reversal_colour": 3}
        out, start = {}, 0
        for name, width in widths.items():
            out[name] = slice(start, start + width)
            start += width
        return out

    def encode(self, frames: Tensor, times: Tensor) -> FeatureSequence:
        """``frames [b, t, 3, h, w]``, ``times [t]`` (or ``[b, t]``) s → ``[b, t, dim]``
        at ``fps``, starting at ``times[0]`` (row 0's first time for ``[b, t]``)."""
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(
                f"colour_motion expects frames [b, t, 3, h, w], got {tuple(frames.shape)}"
            )
        b, t = frames.shape[:2]
        if times.shape[-1] != t:
            raise ValueError(f"colour_motion got {t} frames but {times.shape[-1]} times")
        start = float(times.reshape(-1)[0]) if t else 0.0
        if t == 0:
            empty = frames.new_zeros(b, 0, self.dim)
            return FeatureSequence(values=empty, rate=self.rate, start=start)
        size, grid = self.config.size, self.config.grid
        images = rearrange(frames, "b t c h w -> (b t) c h w")
        if tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )

        # appearance: cell colours [b, t, 3, g, g] and orientation energy [b, t, o, g, g]
        colour = F.adaptive_avg_pool2d(images, grid)
        colour = rearrange(colour, "(b t) c gh gw -> b t c gh gw", b=b)
        parts = [colour]
        if self.config.orientations:
            shape = orientation_energy(images, self.config.orientations, size // grid)
            parts.append(rearrange(shape, "(b t) o gh gw -> b t o gh gw", b=b))

        # motion: change from the previous frame, zero at the first
        cell_change = F.pad(colour.diff(dim=1), (0, 0, 0, 0, 0, 0, 1, 0))  # [b, t, 3, g, g]
        parts.append(cell_change.abs())
        pixels = rearrange(images, "(b t) c h w -> b t (c h w)", b=b)
        change = F.pad(pixels.diff(dim=1), (0, 0, 1, 0))  # d[t], [b, t, 3 h w]; d[0] = 0
        energy = change.abs().mean(dim=-1)  # [b, t]
        # reversal at t: -mean(d[t] · d[t + 1]) where positive; d[t + 1] = 0 at the last frame
        following = F.pad(change[:, 1:], (0, 0, 0, 1))
        turn = (change * following).mean(dim=-1)  # [b, t]
        reversal = torch.where(turn < 0, (-turn).sqrt(), 0.0)
        # the colour of what turns back: per-pixel turns (channels summed) weigh frame t's RGB
        per_pixel = rearrange(change * following, "b t (c hw) -> b t c hw", c=3).sum(dim=2)
        weight = (-per_pixel).clamp(min=0)  # [b, t, h w]
        rgb = rearrange(pixels, "b t (c hw) -> b t c hw", c=3)
        total = weight.sum(dim=-1, keepdim=True)  # [b, t, 1]
        turning_colour = torch.einsum("btcp,btp->btc", rgb, weight) / total.clamp(min=1e-12)
        turning_colour = torch.where(total > 0, turning_colour, 0.0)  # [b, t, 3]

        cells = torch.cat([rearrange(p, "b t c gh gw -> b t (c gh gw)") for p in parts], dim=-1)
        values = torch.cat([cells, energy.unsqueeze(-1), reversal.unsqueeze(-1), turning_colour],
                           dim=-1)
        return FeatureSequence(values=values, rate=self.rate, start=start)

    def extra_repr(self) -> str:
        c = self.config
        return f"fps={c.fps}, grid={c.grid}, size={c.size}, orientations={c.orientations}"


# -- registration ---------------------------------------------------------------------------------


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="visual_encoder", name="colour_motion", build=ColourMotionEncoder,
        config=ColourMotionConfig, properties=colour_motion_properties,
        description="per-frame cell colours, gradient orientations and motion (no weights)",
    ))
