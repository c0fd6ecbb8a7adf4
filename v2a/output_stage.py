"""The output stage: what ``v2a generate`` does to a generated waveform before writing it.

A codec's decoder does not promise to stay inside full scale, and a file writer that meets a
sample beyond ±1 can only clip it. The stage makes the level of the written audio a decision
rather than an accident, in two steps (see ``docs/output.md``):

1. **Loudness** (off by default; ``loudness_lufs``): the integrated loudness of ITU-R BS.1770
   (K-weighting, 400 ms blocks, absolute and relative gates), measured by the ``pyloudnorm``
   package (the ``loudness`` extra), and one gain that brings it to the target. Silence
   (loudness −inf) and audio shorter than one 400 ms block get no gain and a note.
2. **Peak limiter** (on by default, ceiling ``peak_dbfs`` = −1 dBFS): a look-ahead limiter
   linked across channels. Audio whose peak is already under the ceiling passes bit for bit;
   otherwise the output's peak is at most the ceiling, and only the neighbourhood of each peak
   above it is turned down:

   * ``need[t] = max(0, ln(peak[t] / ceiling))``: the gain reduction (in nepers) frame ``t``
     needs, from the largest absolute value of its channels (one gain for all channels, so the
     stereo image does not move);
   * hold: ``hold[t] = max(need[t : t + L + 1])``, the largest need of the look-ahead window
     (``L`` frames = ``lookahead_ms``);
   * release: ``rel[t] = max(hold[t], rho · rel[t - 1])``, an instant rise and an exponential
     recovery that leaves a thousandth of a reduction after ``release_ms``;
   * attack: ``reduction[t] = mean(rel[t - L : t + 1])``. The gain falls smoothly (a ramp in dB)
     over the ``L`` frames before a peak and reaches the peak's full reduction exactly at the
     peak: every ``rel`` averaged there holds that peak in its look-ahead window;
   * ``gain = exp(−reduction)``; the product is rounded to float32.

   The arithmetic runs in float64 against a float32 ceiling (the largest float32 not above
   ``10 ** (peak_dbfs / 20)``), so rounding never lifts a peak over it; a final clamp to the
   ceiling is kept as a safety net and :class:`LimitedAudio` counts what it changed (nothing, on
   any input we know of).

Everything is vectorised torch over blocks of :data:`BLOCK_FRAMES` frames (a Python loop per
block, not per sample): memory stays bounded, and an hour of 44.1 kHz stereo took 25 s on one
core of a shared machine, 60 s about 0.3 s (see ``docs/output.md``). The decaying
maximum of the release is a cumulative maximum in the log domain:
``rel[t] = max over s ≤ t of hold[s] · rho ** (t − s)``, so
``ln rel[t] = t · ln rho + cummax(ln hold[s] − s · ln rho)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from v2a.errors import UserError

#: Length of an ITU-R BS.1770 gating block (seconds): shorter audio has no integrated loudness.
LOUDNESS_BLOCK_SECONDS = 0.4
#: The BS.1770 absolute gate (LUFS): a target at or below it could never be measured back.
ABSOLUTE_GATE_LUFS = -70.0
#: Share of a gain reduction left after ``release_ms`` (in dB, so 10 dB → 0.01 dB).
RELEASE_RESIDUE = 1e-3
#: How far (LU) the final loudness may fall under the target before the report says why.
LOUDNESS_SHORTFALL_LU = 0.5
#: Frames the limiter processes per vectorised block (about 24 s at 44.1 kHz).
BLOCK_FRAMES = 1 << 20
#: The shortest release (ms): faster would distort, and would cost the release's float64
#: arithmetic the precision that keeps every peak under the float32 ceiling.
MIN_RELEASE_MS = 1.0


class OutputStageError(UserError):
    """An output-stage setting that cannot be used, or a missing optional package."""


@dataclass(frozen=True, kw_only=True)
class OutputStage:
    """What is done to generated audio before it is written.

    ``peak_dbfs``: the limiter's ceiling in dBFS (≤ 0); ``None`` turns the limiter off (then a
    sample beyond ±1 is clipped by the file writer). ``loudness_lufs``: the integrated
    loudness (ITU-R BS.1770, LUFS, above −70 and ≤ 0) to normalise to before limiting; ``None``
    (default) keeps the generator's level. ``lookahead_ms``: how long before a peak the limiter
    starts turning the gain down (the attack ramp); 0 makes the gain drop at the peak itself.
    ``release_ms`` (at least 1): how long the gain takes to recover from a reduction to a
    thousandth of it (in dB); the recovery is exponential with time constant
    ``release_ms / ln 1000``.
    """

    peak_dbfs: float | None = -1.0
    loudness_lufs: float | None = None
    lookahead_ms: float = 5.0
    release_ms: float = 200.0

    def __post_init__(self) -> None:
        peak = self.peak_dbfs
        if peak is not None and not (math.isfinite(peak) and peak <= 0):
            raise OutputStageError(f"the peak ceiling must be a level in dBFS at or below 0 (e.g. "
                                   f"-1), not {peak}, or turn the limiter off")
        if self.loudness_lufs is not None and not (
            math.isfinite(self.loudness_lufs) and ABSOLUTE_GATE_LUFS < self.loudness_lufs <= 0
        ):
            raise OutputStageError(f"the loudness target must lie above {ABSOLUTE_GATE_LUFS:g} and "
                                   f"at or below 0 LUFS (e.g. -23), not {self.loudness_lufs}")
        if not (math.isfinite(self.lookahead_ms) and self.lookahead_ms >= 0):
            raise OutputStageError(f"the limiter's look-ahead must be 0 ms or more, not "
                                   f"{self.lookahead_ms}")
        if not (math.isfinite(self.release_ms) and self.release_ms >= MIN_RELEASE_MS):
            raise OutputStageError(f"the limiter's release must be at least {MIN_RELEASE_MS:g} ms, "
                                   f"not {self.release_ms}")


@dataclass(frozen=True, kw_only=True)
class StageReport:
    """What :func:`apply_output_stage` found and did to one waveform.

    Counts are of values (channels × frames). ``raw_peak_dbfs``: peak of the raw output (−inf
    for silence); ``clipped_samples``: raw values with ``|x| ≥ 1``. ``loudness_before`` /
    ``loudness_after``: integrated loudness (LUFS) before the stage and of its result, ``None``
    when loudness normalisation is off or the audio is too short to measure, −inf for silence.
    ``gain_db``: the loudness gain applied (0 when none). ``limited_samples``: values the
    limiter changed. ``notes``: one sentence per thing worth telling the user (a skipped
    normalisation, a target the limiter kept the audio from reaching, ...).
    """

    samples: int
    raw_peak_dbfs: float
    clipped_samples: int
    ceiling_dbfs: float | None
    loudness_target: float | None
    loudness_before: float | None
    loudness_after: float | None
    gain_db: float
    limited_samples: int
    notes: tuple[str, ...] = ()

    def warning(self) -> str | None:
        """One line (no ``v2a: warning:`` prefix) when the raw output reached full scale, else
        None."""
        if not self.clipped_samples:
            return None
        what = (f"the generated audio clipped: {self.clipped_samples} of {self.samples} samples "
                f"at or beyond full scale (peak {self.raw_peak_dbfs:+.1f} dBFS)")
        if self.ceiling_dbfs is None:
            return what + "; the limiter is off, so they are written clipped"
        return what + f"; the limiter brought the peak down to {self.ceiling_dbfs:.1f} dBFS"


class LimitedAudio(NamedTuple):
    """The result of :func:`limit_peaks`."""

    audio: Tensor  #: [c, n] float32, peak ≤ the float32 ceiling
    changed: int  #: values that differ from the (pre-gained) input
    safety_clamped: int  #: values the final clamp had to change (0 unless rounding misbehaves)


# -- public entry point -------------------------------------------------------------------------


def apply_output_stage(wav: Tensor, sample_rate: int,
                       stage: OutputStage) -> tuple[Tensor, StageReport]:
    """Loudness-normalise (when asked) then peak-limit ``wav: [c, n]`` float (c = 1 or 2) at
    ``sample_rate`` Hz. Returns the result as a float32 CPU tensor of the same shape, and a
    :class:`StageReport`.

    Raises ``ValueError`` for non-finite audio (a generator that produced NaN or inf has a bug,
    which should be reported rather than written) or a tensor that is not ``[c, n]`` float, and
    :class:`OutputStageError` when loudness is asked for without ``pyloudnorm`` installed."""
    wav = _checked_waveform(wav, sample_rate)
    channels, frames = wav.shape
    peak = float(wav.abs().max()) if frames else 0.0
    notes: list[str] = []

    gain_db, before = 0.0, None
    if stage.loudness_lufs is not None:
        before = _integrated_loudness(wav, sample_rate)
        if before is None:
            notes.append(f"the audio is shorter than one {LOUDNESS_BLOCK_SECONDS * 1000:.0f} ms "
                         f"loudness block, so it was not loudness-normalised")
        elif before == -math.inf:
            notes.append("the audio is silent (no loudness to measure), so it was not "
                         "loudness-normalised")
        else:
            gain_db = stage.loudness_lufs - before
    gain = 10.0 ** (gain_db / 20.0)

    if stage.peak_dbfs is None:
        out = (wav.double() * gain).float() if gain_db else wav.to(torch.float32, copy=True)
        changed = 0
        if gain_db and peak * gain > 1.0:
            notes.append("the loudness gain took the peak beyond full scale with the limiter off, "
                         "so the written file clips; turn the limiter on or lower the target")
    else:
        limited = limit_peaks(wav, sample_rate, ceiling_dbfs=stage.peak_dbfs, gain=gain,
                              lookahead_ms=stage.lookahead_ms, release_ms=stage.release_ms)
        out, changed = limited.audio, limited.changed

    after = None
    if before is not None and before != -math.inf:
        after = _integrated_loudness(out, sample_rate)
        if after < stage.loudness_lufs - LOUDNESS_SHORTFALL_LU:
            notes.append(f"the peak limiter held the loudness at {after:.1f} LUFS, "
                         f"{stage.loudness_lufs - after:.1f} LU under the target; lower the "
                         f"target or raise the ceiling")
    elif before is not None:
        after = before  # silence stays silent

    report = StageReport(
        samples=channels * frames,
        raw_peak_dbfs=_dbfs(peak),
        clipped_samples=int(torch.count_nonzero(wav.abs() >= 1.0)),
        ceiling_dbfs=stage.peak_dbfs,
        loudness_target=stage.loudness_lufs,
        loudness_before=before,
        loudness_after=after,
        gain_db=gain_db,
        limited_samples=changed,
        notes=tuple(notes),
    )
    return out, report


# -- the peak limiter ---------------------------------------------------------------------------


def float32_ceiling(ceiling_dbfs: float) -> float:
    """The largest float32 value not above ``10 ** (ceiling_dbfs / 20)``: the limiter's ceiling,
    so that the float32 output can be compared with it exactly."""
    exact = 10.0 ** (ceiling_dbfs / 20.0)
    ceiling = np.float32(exact)
    if float(ceiling) > exact:
        ceiling = np.nextafter(ceiling, np.float32(0.0))
    return float(ceiling)


def limit_peaks(wav: Tensor, sample_rate: int, *, ceiling_dbfs: float, gain: float = 1.0,
                lookahead_ms: float = 5.0, release_ms: float = 200.0) -> LimitedAudio:
    """``wav: [c, n]`` float times ``gain``, peak-limited to ``ceiling_dbfs`` (the algorithm is
    in the module doc), as float32 on the CPU. When the gained peak is already at or under the
    ceiling the result is ``wav · gain`` rounded to float32 (``wav`` itself, bit for bit, when
    ``gain`` is 1)."""
    ceiling = float32_ceiling(ceiling_dbfs)
    wav = wav.detach().cpu()
    channels, frames = wav.shape
    if frames == 0 or float(wav.abs().max()) * gain <= ceiling:
        same = wav.to(torch.float32, copy=True) if gain == 1.0 else (wav.double() * gain).float()
        return LimitedAudio(same, 0, 0)
    lookahead = round(lookahead_ms * sample_rate / 1000.0)
    log_decay = math.log(RELEASE_RESIDUE) / (release_ms / 1000.0 * sample_rate)  # ln rho < 0
    log_ceiling = math.log(ceiling)
    out = torch.empty(channels, frames, dtype=torch.float32)
    changed = clamped = 0
    carry = 0.0  # rel of the frame before the block (nepers)
    for first in range(0, frames, BLOCK_FRAMES):
        last = min(first + BLOCK_FRAMES, frames)
        # the reduction of frames [first, last) averages rel over [first - L, last), which holds
        # `need` over [first - L, last + L); frames outside the audio need nothing
        lo, hi = first - lookahead, last + lookahead
        linked = wav[:, max(lo, 0):min(hi, frames)].abs().amax(dim=0).double() * gain
        linked = _padded(linked, before=max(0, -lo), after=max(0, hi - frames))
        hold = torch.relu(torch.log(_window_max(linked, lookahead + 1)) - log_ceiling)
        rel = _decaying_max(hold, carry=carry, log_decay=log_decay)  # frames [first - L, last)
        carry = float(rel[-lookahead - 1])  # rel of frame last - L - 1, where the next block starts
        reduction = _window_mean(rel, lookahead + 1).clamp_(min=0.0)  # frames [first, last)
        block = wav[:, first:last].double() * gain
        limited = (block * torch.exp(-reduction)).float()
        over = limited.abs() > ceiling
        clamped += int(torch.count_nonzero(over))
        limited.clamp_(-ceiling, ceiling)
        changed += int(torch.count_nonzero(limited != block.float()))
        out[:, first:last] = limited
    return LimitedAudio(out, changed, clamped)


def _padded(values: Tensor, *, before: int, after: int) -> Tensor:
    """``values`` with ``before`` zeros in front and ``after`` zeros behind."""
    return torch.nn.functional.pad(values, (before, after))


def _window_max(values: Tensor, width: int) -> Tensor:
    """``out[i] = max(values[i : i + width])`` for every full window (``len - width + 1`` of
    them), by doubling: ``log2(width)`` elementwise maxima, not ``width``."""
    span, running = 1, values  # running[i] = max(values[i : i + span])
    while 2 * span <= width:
        running = torch.maximum(running[:-span], running[span:])
        span *= 2
    count = values.numel() - width + 1  # the window [i, i + width) is [i, i + span) ∪ its tail
    return torch.maximum(running[:count], running[width - span:width - span + count])


def _window_mean(values: Tensor, width: int) -> Tensor:
    """``out[i] = mean(values[i : i + width])`` for every full window, from a cumulative sum
    (float64 over one block: its rounding error is far below float32's resolution)."""
    sums = torch.nn.functional.pad(torch.cumsum(values, dim=0), (1, 0))
    return (sums[width:] - sums[:-width]) / width


def _decaying_max(values: Tensor, *, carry: float, log_decay: float) -> Tensor:
    """``out[t] = max(values[t], exp(log_decay) · out[t - 1])`` with ``out[-1] = carry``, for
    non-negative ``values``, as a cumulative maximum in the log domain (no loop over ``t``;
    for a block and a release of at least MIN_RELEASE_MS at 48 kHz the float64 rounding of
    ``t · log_decay`` stays under 1e-10 relative)."""
    steps = torch.arange(values.numel() + 1, dtype=torch.float64) * log_decay
    logs = torch.log(torch.cat([values.new_tensor([carry]), values]))  # log 0 = -inf is fine
    return torch.exp(torch.cummax(logs - steps, dim=0).values + steps)[1:]


# -- loudness -----------------------------------------------------------------------------------


def _integrated_loudness(wav: Tensor, sample_rate: int) -> float | None:
    """ITU-R BS.1770 integrated loudness (LUFS) of ``wav: [c, n]``; −inf for silence (every block
    under the absolute gate) and None for audio shorter than one gating block."""
    meter_module = _pyloudnorm()
    if wav.shape[1] < LOUDNESS_BLOCK_SECONDS * sample_rate:
        return None
    meter = meter_module.Meter(sample_rate, block_size=LOUDNESS_BLOCK_SECONDS)
    loudness = float(meter.integrated_loudness(wav.double().T.numpy()))
    return loudness if math.isfinite(loudness) else -math.inf


def _pyloudnorm():
    try:
        import pyloudnorm
    except ImportError:
        raise OutputStageError("loudness normalisation needs the pyloudnorm package: "
                               "pip install 'v2a[loudness]'") from None
    return pyloudnorm


# -- helpers ------------------------------------------------------------------------------------


def _checked_waveform(wav: Tensor, sample_rate: int) -> Tensor:
    """``wav`` on the CPU, after checking it is finite ``[c, n]`` float with c = 1 or 2."""
    if not isinstance(wav, Tensor) or wav.dim() != 2 or wav.shape[0] not in (1, 2):
        shape = tuple(wav.shape) if isinstance(wav, Tensor) else type(wav).__name__
        raise ValueError(f"the output stage takes a [channels, samples] tensor with 1 or 2 "
                         f"channels, not {shape}")
    if not wav.is_floating_point():
        raise ValueError(f"the output stage takes float audio, not {wav.dtype}")
    if not (isinstance(sample_rate, int) and sample_rate > 0):
        raise ValueError(f"the sample rate must be a positive integer, not {sample_rate!r}")
    wav = wav.detach().cpu()
    bad = wav.numel() - int(torch.count_nonzero(torch.isfinite(wav)))
    if bad:
        raise ValueError(f"the generated audio holds {bad} non-finite values (NaN or inf) of "
                         f"{wav.numel()}: the generator or codec that produced it has a bug; "
                         f"please report it")
    return wav


def _dbfs(amplitude: float) -> float:
    """``20 · log10(amplitude)``; −inf for 0."""
    return 20.0 * math.log10(amplitude) if amplitude > 0 else -math.inf
