"""NS: the novelty-curve correlation between generated and reference audio.

MaskVAT (Pascual et al., "Masked Generative Video-to-Audio Transformers with Enhanced
Synchronicity", ECCV 2024) scores synchrony by correlating the novelty curves of the generated
and the reference audio; the paper does not publish its exact novelty function or settings, so
this module writes the standard ones (Müller, *Fundamentals of Music Processing*, ch. 6) and
exposes every choice. The defaults are **assumed**, not MaskVAT's confirmed values.

* **Novelty curve** (:func:`novelty_curve`), one value per analysis frame, unitless, ≥ 0.
  Frames: Hann windows of ``window_seconds`` every ``hop_seconds``, no padding (so a constant
  signal has a curve of exact zeros), channels averaged. ``function`` is

  - ``"spectral_flux"``: the sum over frequency bins of the half-wave-rectified frame-to-frame
    increase of ``log(1 + compression · |X| / Σ window)``;
  - ``"energy"``: the half-wave-rectified increase of ``log(1 + compression · E)``, ``E`` the
    frame's windowed mean power.

  Then, when ``local_average_seconds`` > 0, the centred moving average over that span is
  subtracted and the result half-wave rectified again (keeps the peaks, drops slow swells).
  Its rate is ``sample_rate / hop`` frames per second (``hop`` = ``hop_seconds`` in samples).
* **Novelty score** (:func:`novelty_score`): the Pearson correlation, in [-1, 1], of the two
  curves cut to their common length, maximised over lags of up to ±``max_lag_seconds``
  (default 0: the score at lag 0, so a generated track that is late or early scores lower —
  what a synchrony score should report). Degenerate cases are defined, never NaN: when neither
  curve varies (both silent or constant: both have no events) the score is 1.0; when just one
  does not, 0.0 (the same convention as :func:`v2a.metrics.onsets.onset_f1`).
"""

from __future__ import annotations

import numpy as np

from v2a.errors import UserError, suggestion
from v2a.metrics.onsets import mono
from v2a.metrics.spectral import hann_frames

HOP_SECONDS = 0.01  # assumed: 100 frames per second
WINDOW_SECONDS = 0.04  # assumed: 40 ms analysis windows
COMPRESSION = 100.0  # assumed: Müller's logarithmic compression constant γ
LOCAL_AVERAGE_SECONDS = 0.1  # assumed: span of the moving average subtracted (0: none)
MAX_LAG_SECONDS = 0.0  # assumed: correlation at lag 0 only
FUNCTIONS = ("spectral_flux", "energy")


def _rectified_increase(values: np.ndarray) -> np.ndarray:
    """Frame-to-frame increase along axis 0, negative changes set to 0."""
    return np.maximum(0.0, np.diff(values, axis=0))


def novelty_curve(wav: np.ndarray, sample_rate: int, *, function: str = "spectral_flux",
                  hop_seconds: float = HOP_SECONDS, window_seconds: float = WINDOW_SECONDS,
                  compression: float = COMPRESSION,
                  local_average_seconds: float = LOCAL_AVERAGE_SECONDS
                  ) -> tuple[np.ndarray, float]:
    """The novelty curve of ``wav`` (``[n]`` or ``[c, n]``) and its rate (frames per second).

    See the module docstring for the definitions. A clip shorter than two windows has an empty
    curve. ``function`` not in :data:`FUNCTIONS` is a :class:`~v2a.errors.UserError`.
    """
    if function not in FUNCTIONS:
        raise UserError(f"Unknown novelty function {function!r}: "
                        f"{suggestion(function, FUNCTIONS, 'novelty functions')}")
    n_fft = max(16, round(window_seconds * sample_rate))
    hop = max(1, round(hop_seconds * sample_rate))
    rate = sample_rate / hop
    x = mono(wav)
    if len(x) < n_fft + hop:
        return np.zeros(0), rate
    window = np.hanning(n_fft)
    frames = hann_frames(x, n_fft, hop, pad=0)
    if function == "spectral_flux":
        magnitude = np.log1p(compression * np.abs(np.fft.rfft(frames, axis=1)) / window.sum())
        curve = _rectified_increase(magnitude).sum(axis=1)
    else:
        power = (frames ** 2).sum(axis=1) / (window ** 2).sum()
        curve = _rectified_increase(np.log1p(compression * power))
    span = 2 * round(local_average_seconds * rate / 2) + 1  # odd, so the average is centred
    if local_average_seconds > 0 and span > 1:
        local = np.convolve(curve, np.ones(span) / span, mode="same")
        curve = np.maximum(0.0, curve - local)
    return curve, rate


def _is_flat(curve: np.ndarray) -> bool:
    return curve.size == 0 or float(np.ptp(curve)) == 0.0


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two curves of equal length, in [-1, 1]: 1.0 when neither varies,
    0.0 when just one does not."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    flat_a, flat_b = _is_flat(a), _is_flat(b)
    if flat_a or flat_b:
        return 1.0 if flat_a and flat_b else 0.0
    da, db = a - a.mean(), b - b.mean()
    value = (da @ db) / (np.sqrt(da @ da) * np.sqrt(db @ db))
    return float(np.clip(value, -1.0, 1.0))


def lagged_correlation(generated: np.ndarray, reference: np.ndarray, lag: int) -> float:
    """:func:`correlation` of the curves with ``generated`` taken ``lag`` frames later
    (``generated[t + lag]`` against ``reference[t]``; negative: earlier), over their overlap."""
    n = min(len(generated), len(reference))
    g, r = generated[:n], reference[:n]
    if lag >= 0:
        return correlation(g[lag:], r[:n - lag])
    return correlation(g[:n + lag], r[-lag:])


def novelty_score(generated: np.ndarray, reference: np.ndarray, sample_rate: int, *,
                  function: str = "spectral_flux", max_lag_seconds: float = MAX_LAG_SECONDS,
                  hop_seconds: float = HOP_SECONDS, window_seconds: float = WINDOW_SECONDS,
                  compression: float = COMPRESSION,
                  local_average_seconds: float = LOCAL_AVERAGE_SECONDS) -> float:
    """NS: the best Pearson correlation of the two clips' novelty curves over lags within
    ±``max_lag_seconds`` (both clips at ``sample_rate``; see the module docstring)."""
    options = dict(function=function, hop_seconds=hop_seconds, window_seconds=window_seconds,
                   compression=compression, local_average_seconds=local_average_seconds)
    g, rate = novelty_curve(generated, sample_rate, **options)
    r, _ = novelty_curve(reference, sample_rate, **options)
    n = min(len(g), len(r))
    reach = min(round(max_lag_seconds * rate), max(0, n - 2))  # keep ≥ 2 frames of overlap
    return max(lagged_correlation(g, r, lag) for lag in range(-reach, reach + 1))
