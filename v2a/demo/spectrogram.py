"""The demo's picture of the generated sound: a log-power spectrogram with the detected onsets
marked, drawn with numpy and Pillow (no plotting library needed). Pillow comes with
``v2a[demo]``; it is imported on first use, so ``v2a`` itself never needs it."""

from __future__ import annotations

import numpy as np

from v2a.errors import UserError
from v2a.metrics.onsets import mono
from v2a.metrics.spectral import log_spectrogram

#: Decibels below the loudest bin shown; quieter bins are drawn as the darkest colour.
DYNAMIC_RANGE_DB = 80.0
#: The colour scale, quiet to loud (dark blue through purple and orange to pale yellow).
PALETTE = np.array([(0, 0, 16), (60, 15, 110), (180, 50, 100), (250, 140, 40), (252, 250, 190)],
                   dtype=np.float64)
#: The colour of an onset's line; no colour of :data:`PALETTE`'s scale comes near it.
ONSET_COLOUR = (0, 255, 255)
AXIS_HEIGHT = 18  # pixels of the time axis below the spectrogram
AXIS_COLOUR = (235, 235, 235)


def colour_scale(levels: np.ndarray) -> np.ndarray:
    """RGB bytes ``[..., 3]`` for ``levels`` in [0, 1] (0 the quietest), interpolated linearly
    between the colours of :data:`PALETTE`."""
    at = np.clip(levels, 0.0, 1.0) * (len(PALETTE) - 1)
    low = np.minimum(at.astype(int), len(PALETTE) - 2)
    frac = (at - low)[..., None]
    return np.round(PALETTE[low] * (1 - frac) + PALETTE[low + 1] * frac).astype(np.uint8)


def spectrogram_levels(wav, sample_rate: int) -> np.ndarray:
    """``[bins, frames]`` in [0, 1], lowest frequency in the last row: the log power of ``wav``
    (``[n]`` or ``[c, n]``, channels averaged) in 32 ms Hann windows every 8 ms, the loudest bin
    1 and :data:`DYNAMIC_RANGE_DB` below it 0."""
    n_fft = max(64, round(512 * sample_rate / 16000))
    power = log_spectrogram(mono(wav), sample_rate, n_fft=n_fft, hop=max(1, n_fft // 4))
    top = power.max() if power.size else 0.0
    levels = (power - (top - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB
    return np.clip(levels, 0.0, 1.0).T[::-1]


def pillow():
    """The ``PIL`` modules the picture is drawn with, or one sentence saying to install them."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise UserError("the demo draws its spectrogram with Pillow, which is not installed; "
                        "install v2a[demo]") from None
    return Image, ImageDraw, ImageFont


def draw_spectrogram(wav, sample_rate: int, onsets, *, width: int = 800, height: int = 240):
    """An RGB picture ``width`` × ``height + AXIS_HEIGHT`` pixels: the spectrogram of ``wav``
    (:func:`spectrogram_levels`, 0 Hz at the bottom, the Nyquist frequency at the top, time
    left to right over the whole sound), a vertical :data:`ONSET_COLOUR` line at each onset
    time (seconds; pixel column ``round(t / duration · (width - 1))``), and a time axis below
    with a tick every second. Returns a ``PIL.Image.Image``."""
    Image, ImageDraw, ImageFont = pillow()
    samples = mono(wav)
    duration = max(samples.shape[-1] / sample_rate, 1e-9)
    levels = spectrogram_levels(samples, sample_rate)
    if levels.shape[1] == 0:
        levels = np.zeros((1, 1))
    picture = Image.fromarray(colour_scale(levels), mode="RGB").resize(
        (width, height), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width, height + AXIS_HEIGHT), (20, 20, 20))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for time in np.asarray(onsets, dtype=np.float64):
        x = round(float(time) / duration * (width - 1))
        if 0 <= x < width:
            draw.line([(x, 0), (x, height - 1)], fill=ONSET_COLOUR, width=1)
    font = ImageFont.load_default()
    for second in range(int(duration) + 1):
        x = round(second / duration * (width - 1))
        draw.line([(x, height), (x, height + 4)], fill=AXIS_COLOUR)
        draw.text((min(x + 2, width - 24), height + 4), f"{second} s", fill=AXIS_COLOUR,
                  font=font)
    return canvas
