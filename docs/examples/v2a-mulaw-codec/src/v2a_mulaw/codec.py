"""μ-law companding as a v2a :class:`~v2a.AudioCodec`: one code per sample, one codebook.

μ-law (ITU-T G.711, and the 8-bit output of WaveNet) compresses the amplitude logarithmically
before quantising it uniformly, so quiet sounds get fine steps and loud ones coarse steps::

    y = sign(x) · ln(1 + μ|x|) / ln(1 + μ)          compress,   x ∈ [-1, 1] → y ∈ [-1, 1]
    q = round((y + 1) / 2 · μ)                       quantise,   q ∈ {0, …, μ}
    x̂ = sign(ŷ) · ((1 + μ)^|ŷ| − 1) / μ             expand,     ŷ = 2q / μ − 1

with ``μ = 2**bits − 1``, so there are exactly ``2**bits`` codes (μ = 255 at 8 bits, G.711's
value). This is the continuous law; G.711's segmented approximation and its bit inversion are
not reproduced. The signal-to-noise ratio hardly depends on the level of the signal:
``SNR ≈ 3 · 4**bits / ln²(1 + μ)``, i.e. ``6.02·bits + 4.77 − 20·log10(ln(1 + μ))`` dB, about
38 dB at 8 bits and 20 dB at 4 bits.

In v2a terms: ``frame_rate = sample_rate`` (a "frame" is one sample), ``n_codebooks = 1``,
``codebook_size = 2**bits``, and :meth:`MulawCodec.latents` is the companded value ``ŷ``
(``latent_dim = 1``). The codec is mono: :meth:`MulawCodec.encode` mixes any number of input
channels down to one, and :meth:`MulawCodec.decode_frames` (which the inherited
``decode`` fits to the length asked for) returns one channel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from v2a import AudioCodec, FeatureSequence
from v2a_mulaw.plugin import MulawConfig, mulaw_properties  # noqa: F401  (the options, light)

# -- the law --------------------------------------------------------------------------------------


def compress(x: Tensor, mu: float) -> Tensor:
    """``x`` in [-1, 1] (clipped) → companded ``y`` in [-1, 1], same shape."""
    x = x.clamp(-1.0, 1.0)
    return torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)


def expand(y: Tensor, mu: float) -> Tensor:
    """Inverse of :func:`compress`."""
    return torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu


# -- the component --------------------------------------------------------------------------------


class MulawCodec(AudioCodec):
    """Mono μ-law codec: ``wav [b, c, n]`` → ``codes [b, 1, n]`` → ``wav [b, 1, n]``."""

    def __init__(self, config: MulawConfig | None = None):
        super().__init__()
        config = config if config is not None else MulawConfig()
        self.config = config
        self.sample_rate = config.sample_rate
        self.channels = 1
        self.frame_rate = float(config.sample_rate)  # one code per sample
        self.n_codebooks = 1
        self.codebook_size = 2**config.bits
        self.latent_dim = 1
        self.mu = float(self.codebook_size - 1)
        # The codebook as two tables indexed by code: the companded value ŷ and the sample x̂
        # it decodes to (a G.711 decoder is such a table too). They are buffers so that they
        # follow .to(dtype) and .to(device), and with them decode's output; not persistent,
        # since the config determines them, so checkpoints stay empty.
        companded = torch.arange(self.codebook_size, dtype=torch.float64) * (2.0 / self.mu) - 1.0
        self.register_buffer("companded", companded.float(), persistent=False)  # [2**bits]
        self.register_buffer("levels", expand(companded, self.mu).float(), persistent=False)

    def encode(self, wav: Tensor) -> Tensor:
        """``wav [b, c, n]`` float → ``codes [b, 1, n]`` int64 in ``[0, 2**bits)``."""
        if wav.dim() != 3:
            raise ValueError(f"mulaw encode expects wav [b, c, n], got {tuple(wav.shape)}")
        mono = wav.to(self.levels.dtype).mean(dim=1, keepdim=True)  # [b, 1, n]
        y = compress(mono, self.mu)
        return torch.round((y + 1.0) * (self.mu / 2.0)).long()  # [b, 1, n]

    def decode_frames(self, codes: Tensor) -> Tensor:
        """``codes [b, 1, l]`` → ``wav [b, 1, l]`` float, one sample per code. The inherited
        ``decode(codes, length=None)`` calls this and trims or zero-pads it to ``length``."""
        self._check_codes(codes)
        return self.levels[codes]  # [b, 1, l]

    def latents(self, codes: Tensor) -> FeatureSequence:
        """``codes [b, 1, l]`` → the companded values ``ŷ`` as ``[b, l, 1]`` at ``frame_rate``."""
        self._check_codes(codes)
        y = self.companded[codes]  # [b, 1, l]
        return FeatureSequence(values=y.transpose(1, 2), rate=self.frame_rate)

    def _check_codes(self, codes: Tensor) -> None:
        if codes.dim() != 3 or codes.shape[1] != self.n_codebooks:
            raise ValueError(f"mulaw codes must be [b, 1, l], got {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"mulaw codes must be integers, got {codes.dtype}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"mulaw codes must lie in [0, {self.codebook_size}), got "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate}, bits={self.config.bits}"
