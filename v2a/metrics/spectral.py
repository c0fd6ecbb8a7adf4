"""Spectral helpers: windowed frames, log-power spectrograms, the DCT-II and MFCCs.

* :func:`hann_frames` — a waveform zero-padded and cut into Hann-windowed frames (the framing
  the spectrogram and the onset detector of :mod:`v2a.metrics.onsets` share);
* :func:`log_spectrogram` — ``10 · log10(|FFT|² + 1e-10)`` of centred frames: log power in dB
  (relative to a full-scale sample, summed over the window; the plots draw it);
* :func:`mfcc` — mel-frequency cepstral coefficients of log-mel frames: the orthonormal DCT-II
  (:func:`dct_matrix`) over the mel axis, first :data:`MFCC_COEFFICIENTS`; in the units of the
  log-mel input (an orthonormal transform keeps Euclidean distances, so a Fréchet distance on
  all ``n_mels`` coefficients equals the one on the log-mel frames).
"""

from __future__ import annotations

import math

import numpy as np

MFCC_COEFFICIENTS = 20


def hann_frames(wav, n_fft: int, hop: int, pad: int) -> np.ndarray:
    """``[frames, n_fft]`` float64: the mono waveform ``wav [n]`` zero-padded by ``pad`` samples on
    each side, cut into windows of ``n_fft`` samples every ``hop`` samples (the first starting at
    the first padded sample), each multiplied by ``numpy.hanning(n_fft)``."""
    x = np.pad(np.asarray(wav, dtype=np.float64), pad)
    return np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)


def log_spectrogram(wav: np.ndarray, sample_rate: int, n_fft: int = 512, hop: int = 128
                    ) -> np.ndarray:
    """``[frames, n_fft // 2 + 1]`` log power (dB) of a mono waveform, centred frames."""
    frames = hann_frames(wav, n_fft, hop, pad=n_fft // 2)
    return 10 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-10)


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_in, n_out]`` orthonormal DCT-II: ``x @ dct_matrix(n, k)`` = the first ``k`` coefficients."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    basis = np.cos(np.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    basis[:, 0] /= math.sqrt(2.0)
    return basis


def mfcc(log_mel, n_coefficients: int = MFCC_COEFFICIENTS) -> np.ndarray:
    """MFCCs of log-mel frames ``[t, n_mels]``: the orthonormal DCT-II over the mel axis, first
    ``n_coefficients`` (at most ``n_mels``) → ``[t, n_coefficients]``."""
    log_mel = np.asarray(log_mel, dtype=np.float64)
    return log_mel @ dct_matrix(log_mel.shape[-1], min(n_coefficients, log_mel.shape[-1]))
