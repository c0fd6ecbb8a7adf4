"""Fréchet distance between two sets of feature frames.

Each set of frames ``[t, d]`` (every frame of every clip of one side, pooled) is summed up by
its mean ``μ`` and covariance ``Σ`` (unbiased, ``t - 1`` in the denominator), and the distance is
the Fréchet (2-Wasserstein) distance between the Gaussians ``N(μ₁, Σ₁)`` and ``N(μ₂, Σ₂)``::

    FD = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)

Units: the square of the features' units (a log-mel feature in dB gives dB²); 0 for identical
statistics, lower is closer. With few frames the estimate is biased upwards (a side with no more
frames than dimensions has a rank-deficient covariance), so compare distances only between runs
of the same clips and frame counts.
"""

from __future__ import annotations

import numpy as np


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues that
    rounding made slightly negative count as 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``:
    ``|mu1 - mu2|² + tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½)``.

    In float64, through symmetric eigendecompositions (no complex square roots, no inverse), so
    rank-deficient covariances (fewer frames than dimensions, constant features) are fine.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * cross
    return max(0.0, float(value))


class Moments:
    """Running mean and covariance of frames ``[t, d]`` (float64, shifted by the first frames'
    mean for accuracy), so that a whole evaluation set never sits in memory."""

    def __init__(self) -> None:
        self.count = 0
        self.shift: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def add(self, frames) -> None:
        x = np.asarray(frames, dtype=np.float64)
        if len(x) == 0:
            return
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.total = np.zeros_like(self.shift)
            self.outer = np.zeros((x.shape[1], x.shape[1]))
        y = x - self.shift
        self.total += y.sum(axis=0)
        self.outer += y.T @ y
        self.count += len(x)

    @property
    def dim(self) -> int:
        return 0 if self.shift is None else len(self.shift)

    def mean(self) -> np.ndarray:
        return self.shift + self.total / self.count

    def covariance(self) -> np.ndarray:
        centred = self.total / self.count
        return (self.outer - self.count * np.outer(centred, centred)) / (self.count - 1)


def frechet_of(a: Moments, b: Moments) -> float:
    """:func:`frechet_distance` of two sets' statistics; NaN when a side has under 2 frames."""
    if min(a.count, b.count) < 2:
        return float("nan")
    return frechet_distance(a.mean(), a.covariance(), b.mean(), b.covariance())
