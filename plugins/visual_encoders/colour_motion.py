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

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports

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


# -- registration ---------------------------------------------------------------------------------


def build_encoder(config: ColourMotionConfig):
    """The :class:`ColourMotionEncoder` of ``config`` (its module, and torch, load on first use)."""
    from v2a_plugins.visual_encoders.colour_motion_model import ColourMotionEncoder  # deferred: torch (the encoder)

    return ColourMotionEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="visual_encoder", name="colour_motion", build=build_encoder,
        config=ColourMotionConfig, properties=colour_motion_properties,
        description="per-frame cell colours, gradient orientations and motion (no weights)",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.visual_encoders.colour_motion_model` on first use.
_HOMES = {"v2a_plugins.visual_encoders.colour_motion_model": ("ColourMotionEncoder",
                                                              "orientation_energy")}
__all__ = ["ColourMotionConfig", "build_encoder", "colour_motion_properties", "feature_width",
           *_HOMES["v2a_plugins.visual_encoders.colour_motion_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
