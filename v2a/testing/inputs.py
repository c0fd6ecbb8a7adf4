"""Small, seeded inputs for the conformance checks, and the tensor plumbing they share.

Every input is drawn from a local :class:`torch.Generator`, so a check sees the same numbers on
every run and never touches the global random state. Sizes are small on purpose: a check of a
small component runs in milliseconds on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from v2a.sequences import Conditioning, FeatureSequence

#: Rates of the visual streams handed to fusers, cycled: the first stream is at 8 Hz, the others
#: alternate between a slow (S3D-like) and a fast rate, so that no two neighbours share a rate.
STREAM_RATES = (8.0, 3.125, 25.0)

#: Fraction of its steps that are real (not padding) in batch row ``i % 3``.
VALID_FRACTIONS = (1.0, 0.6, 0.8)


def seeded(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


# -- inputs -------------------------------------------------------------------------------------


def waveform(
    batch: int, channels: int, num_samples: int, sample_rate: int, gen: torch.Generator
) -> Tensor:
    """``[b, c, n]`` float32 in ``[-0.5, 0.5]``: a random sine (50 Hz .. sr / 4) plus noise."""
    t = torch.arange(num_samples, dtype=torch.float64) / sample_rate
    low, high = 50.0, max(sample_rate / 4, 60.0)
    freq = low + (high - low) * torch.rand(batch, channels, 1, generator=gen, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(batch, channels, 1, generator=gen, dtype=torch.float64)
    sine = 0.25 * torch.sin(2 * math.pi * freq * t + phase)
    noise = torch.rand(batch, channels, num_samples, generator=gen, dtype=torch.float64) - 0.5
    noise = 0.5 * noise
    return (sine + noise).float()


def frames(batch: int, num_frames: int, size: tuple[int, int], gen: torch.Generator) -> Tensor:
    """``[b, t, 3, h, w]`` float32 RGB in ``[0, 1]``."""
    h, w = size
    return torch.rand(batch, num_frames, 3, h, w, generator=gen)


def codes(
    batch: int, n_codebooks: int, length: int, codebook_size: int, gen: torch.Generator
) -> Tensor:
    """``[b, k, l]`` int64 uniform in ``[0, codebook_size)``."""
    return torch.randint(0, codebook_size, (batch, n_codebooks, length), generator=gen)


def padding_mask(batch: int, length: int) -> Tensor:
    """``[b, t]`` bool: row ``i`` has its first ``VALID_FRACTIONS[i % 3]`` of steps valid (>= 1)."""
    valid = [max(1, math.ceil(length * VALID_FRACTIONS[i % 3])) for i in range(batch)]
    return torch.arange(length).unsqueeze(0) < torch.tensor(valid).unsqueeze(1)


def features(
    batch: int, length: int, dim: int, rate: float, gen: torch.Generator, *, padded: bool = False
) -> FeatureSequence:
    """Standard-normal ``[b, t, d]`` features at ``rate``; with ``padded``, a padding mask too."""
    values = torch.randn(batch, length, dim, generator=gen)
    mask = padding_mask(batch, length) if padded else None
    return FeatureSequence(values=values, rate=rate, mask=mask)


def streams(
    dims: Mapping[str, int], batch: int, gen: torch.Generator, *, duration: float = 2.0,
    padded: Callable[[int], bool] = lambda i: True,
) -> dict[str, FeatureSequence]:
    """One feature sequence per named stream, ``duration`` seconds long at :data:`STREAM_RATES`.

    Stream ``i`` carries a padding mask when ``padded(i)``.
    """
    out = {}
    for i, (name, dim) in enumerate(dims.items()):
        rate = STREAM_RATES[0] if i == 0 else STREAM_RATES[1 + (i - 1) % 2]
        length = math.ceil(rate * duration)
        out[name] = features(batch, length, dim, rate, gen, padded=padded(i))
    return out


def fill_padding(sequence: FeatureSequence, fill: Tensor | float) -> FeatureSequence:
    """``sequence`` with the values of its padded steps (mask ``False``) replaced by ``fill``."""
    if sequence.mask is None:
        return sequence
    fill = torch.as_tensor(fill, dtype=sequence.values.dtype).expand_as(sequence.values)
    return sequence.replace(values=torch.where(sequence.mask.unsqueeze(-1), sequence.values, fill))


# -- plumbing -----------------------------------------------------------------------------------


def map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to every tensor in ``obj`` (tensors, sequences, conditionings, mappings)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, FeatureSequence):
        mask = None if obj.mask is None else fn(obj.mask)
        return obj.replace(values=fn(obj.values), mask=mask)
    if isinstance(obj, Conditioning):
        return Conditioning(
            aligned=map_tensors(obj.aligned, fn), context=map_tensors(obj.context, fn)
        )
    if isinstance(obj, Mapping):
        return {key: map_tensors(value, fn) for key, value in obj.items()}
    return obj


def to_dtype(obj: Any, dtype: torch.dtype) -> Any:
    """Floating-point tensors in ``obj`` cast to ``dtype``; integer and bool tensors untouched."""
    return map_tensors(obj, lambda t: t.to(dtype) if t.is_floating_point() else t)


def to_device(obj: Any, device: torch.device | str) -> Any:
    return map_tensors(obj, lambda t: t.to(device))


def batch_rows(obj: Any, index: slice) -> Any:
    """The batch rows ``index`` of every tensor in ``obj`` (the batch is the first dimension),
    or of ``obj`` itself when it is a list (one item per row, such as a text encoder's texts)."""
    if isinstance(obj, list):
        return obj[index]
    return map_tensors(obj, lambda t: t[index])
