"""Audio resampling in torch: :func:`resample_audio`, band-limited interpolation with a
Kaiser-windowed sinc, for waveforms already in memory (a generator's candidates, resampled for a
reranker that listens at another rate), on whatever device they are.

Each output sample ``j`` lies at ``t = j * orig_rate / new_rate`` input samples and is
``sum_k x[k] * h(t - k)``, with the textbook windowed-sinc low-pass (Oppenheim & Schafer's
window method, Kaiser's design formulas):

* ``h(tau) = (wc / pi) * sinc(wc * tau / pi) * kaiser(tau)`` for ``|tau| <= T``, 0 beyond
  (``sinc(x) = sin(pi x) / (pi x)``; ``wc`` the cutoff in radians per input sample);
* ``kaiser(tau) = I0(beta * sqrt(1 - (tau / T) ** 2)) / I0(beta)``, ``beta = 0.1102 * (A - 8.7)``
  for the stopband attenuation ``A`` = :data:`STOPBAND_DB` (and a passband ripple of the same
  factor, ``10 ** (-A / 20)``);
* ``T`` = :data:`HALF_WIDTH` samples of the lower of the two rates; the transition band is then
  ``(A - 8) / (2.285 * 2T)`` radians per input sample wide, and ``wc`` sits half of it below the
  lower rate's Nyquist frequency, so the stopband begins exactly there: nothing the new rate
  cannot hold folds back into it above ``-A`` dB.

Samples before the first and after the last are zeros, so the first and last
:data:`HALF_WIDTH` output samples fade with the kernel's reach beyond the signal; the output is
not delayed (an impulse at input sample ``i`` peaks at output ``i * new_rate / orig_rate``).

(libswresample, through PyAV, was the other candidate: driven from arrays it returns one sample
more or less than ``round(n * new_rate / orig_rate)`` for many lengths and nothing at all for
inputs of a few dozen samples or fewer, so it cannot keep this function's length contract.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

STOPBAND_DB = 80.0
"""How far (dB) the resampler attenuates what lies above the lower rate's Nyquist frequency; the
passband ripple is the same factor, ``10 ** (-80 / 20) = 1e-4`` of the amplitude."""

HALF_WIDTH = 32
"""Half the kernel's length, in samples at the lower of the two rates."""

_CHUNK_ELEMENTS = 1 << 22  # input values gathered per step: 16 MB of float32, whatever the batch
_PERIOD_ELEMENTS = 1 << 22  # the largest one-period matrix (phases x input samples) to build


def resample_audio(wav: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """``wav [..., n]`` float at ``orig_rate`` Hz → ``[..., round(n * new_rate / orig_rate)]``
    float32 at ``new_rate`` Hz, on ``wav``'s device; every row (the leading dimensions) on its
    own. Equal rates give a float32 copy of ``wav``. The filter is in the module's doc; it passes
    the band below about 84% of the lower rate's Nyquist frequency within ``1e-4`` and
    attenuates all above that Nyquist frequency by :data:`STOPBAND_DB`.

    A rate that is not a positive integer, or ``wav`` that is not a float tensor, is the calling
    code's mistake: ``ValueError``."""
    for name, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"{name} must be a positive integer number of Hz, not {rate!r}")
    if not isinstance(wav, Tensor) or not wav.is_floating_point() or wav.dim() == 0:
        what = f"{wav.dtype} tensor of shape {tuple(wav.shape)}" if isinstance(wav, Tensor) \
            else type(wav).__name__
        raise ValueError(f"resample_audio takes a float tensor [..., samples], not a {what}")
    samples = wav.shape[-1]
    length = round(samples * new_rate / orig_rate)
    rows = wav.reshape(math.prod(wav.shape[:-1]), samples).to(torch.float32)
    if orig_rate == new_rate:
        return rows.clone().reshape(wav.shape)
    if rows.numel() == 0 or length == 0:
        return rows.new_zeros(*wav.shape[:-1], length)
    kernel = _SincKernel(orig_rate=orig_rate, new_rate=new_rate)
    gcd = math.gcd(orig_rate, new_rate)
    up, down = new_rate // gcd, orig_rate // gcd  # output j lies at input sample j * down / up
    if up * (down + 2 * kernel.reach + 1) <= _PERIOD_ELEMENTS:
        out = _by_periods(rows, kernel, up=up, down=down, length=length)
    else:
        out = _by_samples(rows, kernel, up=up, down=down, length=length)
    return out.reshape(*wav.shape[:-1], length)


def _by_periods(rows: Tensor, kernel: _SincKernel, *, up: int, down: int, length: int) -> Tensor:
    """Resample ``rows [r, n]`` float32 → ``[r, length]``, one matrix product per period: output
    ``b * up + p`` lies ``p * down / up`` input samples after input ``b * down``, so every block
    of ``up`` outputs is the same matrix (one column of kernel values per phase ``p``) times the
    input samples around block ``b``, from ``b * down - reach`` to
    ``b * down + reach + (up - 1) * down / up``. (A float32 product: a caller that lets float32
    matrix products run in TF32 on a GPU gets about 1e-3 of precision instead of 1e-4.)"""
    reach, device = kernel.reach, rows.device
    phase = torch.arange(up, device=device)
    base = torch.div(phase * down, up, rounding_mode="floor")  # input sample at or before each
    offsets = torch.arange(-reach, reach + 1, device=device)
    taps = kernel((phase * down - base * up).double()[:, None] / up - offsets)  # [up, taps]
    width = int(base[-1]) + 2 * reach + 1  # input samples one block's outputs reach
    matrix = torch.zeros(width, up, dtype=torch.float32, device=device)
    matrix[base[:, None] + reach + offsets, phase[:, None]] = taps.float()  # [width, up]
    blocks = -(-length // up)
    right = max(0, (blocks - 1) * down + width - reach - rows.shape[1])
    windows = torch.nn.functional.pad(rows, (reach, right)).unfold(-1, width, down)  # [r, b, width]
    step = max(1, _CHUNK_ELEMENTS // (rows.shape[0] * width))
    parts = [windows[:, first:first + step] @ matrix
             for first in range(0, blocks, step)]  # [r, chunk, up] each
    return torch.cat(parts, dim=1).reshape(rows.shape[0], -1)[:, :length]


def _by_samples(rows: Tensor, kernel: _SincKernel, *, up: int, down: int, length: int) -> Tensor:
    """:func:`_by_periods` for rates whose period is too long to hold as one matrix (rates
    without a large common divisor, such as 44101 and 16000 Hz): each output's kernel values
    computed for it, in chunks of outputs."""
    reach, device = kernel.reach, rows.device
    padded = torch.nn.functional.pad(rows, (reach, reach + 1))
    offsets = torch.arange(-reach, reach + 1, device=device)
    out = torch.empty(rows.shape[0], length, dtype=torch.float32, device=device)
    step = max(1, _CHUNK_ELEMENTS // (rows.shape[0] * offsets.numel()))
    for first in range(0, length, step):
        j = torch.arange(first, min(first + step, length), device=device)
        base = torch.div(j * down, up, rounding_mode="floor")  # the input sample at or before
        fraction = (j * down - base * up).double() / up  # how far after it, in [0, 1)
        taps = kernel(fraction[:, None] - offsets)  # [chunk, taps]: h(t - k)
        near = padded[:, base[:, None] + offsets + reach]  # [r, chunk, taps]: x[k]
        out[:, first:first + j.numel()] = (near * taps.float()).sum(dim=-1)
    return out


class _SincKernel:
    """The low-pass ``h(tau)`` of the module's doc for resampling ``orig_rate`` → ``new_rate``,
    ``tau`` in input samples."""

    def __init__(self, *, orig_rate: int, new_rate: int):
        lower = min(1.0, new_rate / orig_rate)  # the lower Nyquist frequency / the input's
        self.half_width = HALF_WIDTH / lower  # T, in input samples
        self.reach = math.ceil(self.half_width)  # taps at input samples floor(t) -+ reach
        transition = (STOPBAND_DB - 8.0) / (2.285 * 2.0 * self.half_width)
        self.cutoff = math.pi * lower - transition / 2.0  # wc, radians per input sample
        self.beta = 0.1102 * (STOPBAND_DB - 8.7)
        self.i0_beta = float(torch.special.i0(torch.tensor(self.beta, dtype=torch.float64)))

    def __call__(self, tau: Tensor) -> Tensor:
        """``h(tau)`` for float64 ``tau``, 0 where ``|tau| > T``."""
        inside = (1.0 - (tau / self.half_width) ** 2).clamp(min=0.0)
        window = torch.special.i0(self.beta * inside.sqrt()) / self.i0_beta
        low_pass = self.cutoff / math.pi * torch.sinc(self.cutoff / math.pi * tau)
        return torch.where(tau.abs() <= self.half_width, low_pass * window, 0.0)
