"""One PNG per clip (``--plots``): the generated and the reference spectrogram on one time
axis, with the ground-truth event times and each side's detected onsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from v2a.files import atomic_output
from v2a.metrics.onsets import detect_onsets
from v2a.metrics.spectral import log_spectrogram


def plot_clip(path: Path, stem: str, generated: np.ndarray, reference: np.ndarray,
              sample_rate: int, *, truth: list[float] | None, detected, f1: float | None) -> None:
    """Two spectrograms on one time axis (generated above, reference below), ground-truth event
    times as vertical lines, each side's detected onsets as markers; written atomically."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state

    seconds = len(generated) / sample_rate
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    top = sample_rate / 2000
    for ax, wav, onsets, label in zip(axes, (generated, reference), detected,
                                      ("generated", "reference")):
        spec = log_spectrogram(wav, sample_rate)
        ax.imshow(spec.T, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, top),
                  vmin=spec.max() - 80, vmax=spec.max())
        for t in truth or []:
            ax.axvline(t, color="cyan", linewidth=0.8, alpha=0.8)
        ax.plot(onsets, np.full(len(onsets), top * 0.93), "v", color="white", markersize=7)
        ax.set_ylabel(f"{label}\nkHz")
        ax.set_xlim(0, seconds)
    axes[-1].set_xlabel("seconds   (▼ detected onsets" + (", cyan lines: ground-truth events)"
                                                          if truth else ")"))
    fig.suptitle(stem + (f"   onset F1 {f1:.2f}" if f1 is not None else ""))
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)


def plot_pair(folder: Path, stem: str, generated: np.ndarray, reference: np.ndarray,
              sample_rate: int, *, truth: list[float] | None, f1: float | None) -> None:
    """:func:`plot_clip` of one pair's mono sides ``[1, n]`` to ``folder/<stem>.png``, with the
    onsets :func:`~v2a.metrics.onsets.detect_onsets` finds on each side."""
    plot_clip(folder / f"{stem}.png", stem, generated[0], reference[0], sample_rate, truth=truth,
              f1=f1, detected=(detect_onsets(generated, sample_rate),
                               detect_onsets(reference, sample_rate)))
