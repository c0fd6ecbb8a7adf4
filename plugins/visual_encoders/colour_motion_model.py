"""The ``colour_motion`` visual encoder's implementation: :class:`ColourMotionEncoder` (torch).

The plug-in's documentation (every feature it computes), options and registration are in
:mod:`v2a_plugins.visual_encoders.colour_motion`, which imports this module the first time an
encoder is built.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from v2a import FeatureSequence, VisualEncoder
from v2a_plugins.visual_encoders.colour_motion import ColourMotionConfig, feature_width

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
