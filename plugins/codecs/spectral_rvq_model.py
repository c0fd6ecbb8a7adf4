"""The ``spectral_rvq`` codec's implementation: :class:`SpectralRVQCodec` and its k-means
fitting (torch).

The plug-in's documentation (how the codec works, how to fit it), options and registration
are in :mod:`v2a_plugins.codecs.spectral_rvq`, which imports this module the first time a
codec is built.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from v2a import AudioCodec, FeatureSequence
from v2a.errors import UserError
from v2a.weights import PRETRAINED, WeightsError, is_random, load_checkpoint, local_file
from v2a_plugins.codecs.spectral_rvq import NOT_PUBLISHED, SpectralRVQConfig

# -- k-means (the codebook fitting) ---------------------------------------------------------------

CHUNK = 16384  # frames per distance matrix in assignment: [CHUNK, codebook_size] at a time


def nearest(x: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """``x: [n, d]``, ``centres: [k, d]`` → index ``[n]`` of the nearest centre and the squared
    distance ``[n]`` to it (chunked, so memory stays ``CHUNK × k``)."""
    sq_centres = centres.pow(2).sum(-1)  # [k]
    index, dist = [], []
    for part in x.split(CHUNK):
        # |x - c|² = |x|² - 2 x·c + |c|²; |x|² does not change the argmin
        partial = sq_centres - 2 * part @ centres.T  # [chunk, k]
        best, idx = partial.min(dim=-1)
        index.append(idx)
        dist.append((best + part.pow(2).sum(-1)).clamp(min=0))
    if not index:
        return x.new_zeros(0, dtype=torch.long), x.new_zeros(0)
    return torch.cat(index), torch.cat(dist)


def kmeans_plus_plus(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): ``x: [n, d]`` → ``[k, d]``.

    Each next centre is a frame drawn with probability proportional to its squared distance to
    the nearest centre so far. With fewer distinct frames than ``k`` the rest are repeats.
    """
    n = x.shape[0]
    sq = x.pow(2).sum(-1)  # [n]

    def draw(weights: Tensor) -> int:
        if float(weights.sum()) <= 0:  # every frame already is a centre
            return int(torch.randint(n, (1,), generator=gen))
        return int(torch.multinomial(weights.double().cpu(), 1, generator=gen))

    def distance(i: int) -> Tensor:  # [n] squared distances to frame i
        return (sq - 2 * (x @ x[i]) + sq[i]).clamp(min=0)

    chosen = [draw(torch.ones(n))]
    d2 = distance(chosen[0])  # [n] squared distance to the nearest centre so far
    for _ in range(1, k):
        chosen.append(draw(d2))
        d2 = torch.minimum(d2, distance(chosen[-1]))
    return x[chosen]


def kmeans(x: Tensor, k: int, *, iterations: int, gen: torch.Generator, seed_frames: int) -> Tensor:
    """Lloyd's k-means on ``x: [n, d]`` from a k-means++ seeding on ``seed_frames`` frames.

    An entry no frame chooses is moved onto the frame that is worst fitted at that iteration,
    so every entry ends up used whenever there are at least ``k`` distinct frames.
    """
    n = x.shape[0]
    subset = torch.randperm(n, generator=gen)[:seed_frames].to(x.device)
    centres = kmeans_plus_plus(x[subset], k, gen)
    previous = None
    for _ in range(iterations):
        index, dist = nearest(x, centres)
        if previous is not None and torch.equal(index, previous):
            break  # converged
        previous = index
        counts = torch.bincount(index, minlength=k)  # [k]
        sums = torch.zeros_like(centres).index_add_(0, index, x)  # [k, d]
        means = sums / counts.clamp(min=1).unsqueeze(-1).to(x.dtype)
        centres = torch.where((counts > 0).unsqueeze(-1), means, centres)
        empty = (counts == 0).nonzero().squeeze(-1)
        if len(empty):
            worst = dist.topk(min(len(empty), n)).indices  # the worst-fitted frames
            centres[empty[: len(worst)]] = x[worst]
    return centres


# -- the codec ------------------------------------------------------------------------------------


class SpectralRVQCodec(AudioCodec):
    """Mono STFT-magnitude codec with a residual VQ fitted by k-means; phase by Griffin-Lim.

    ``wav [b, c, n]`` → ``codes [b, n_codebooks, ceil(n / hop_length)]`` → ``wav [b, 1, n']``.
    """

    def __init__(self, config: SpectralRVQConfig | None = None):
        super().__init__()
        config = config if config is not None else SpectralRVQConfig()
        self.config = config
        self.sample_rate = config.sample_rate
        self.channels = 1
        self.hop_length = config.hop_length
        self.n_fft = config.n_fft
        self.frame_rate = config.sample_rate / config.hop_length
        self.n_codebooks = config.n_codebooks
        self.codebook_size = config.codebook_size
        self.latent_dim = config.n_fft // 2 + 1

        window = torch.hann_window(config.n_fft)  # periodic
        self.register_buffer("window", window, persistent=False)
        # a sine of amplitude a has an STFT peak of a · sum(window) / 2: divide it out (summed
        # on the CPU, so that a build on the meta device, which has no values, works too)
        self.magnitude_scale = float(torch.hann_window(config.n_fft, device="cpu").sum()) / 2

        # The fitted state: the codebooks, and the analysis options they were fitted under (so
        # that loading a file fitted with other options fails with a clear sentence).
        k, size, dim = config.n_codebooks, config.codebook_size, self.latent_dim
        scale = 0.1 * 0.5 ** torch.arange(k, dtype=torch.float32).view(k, 1, 1)
        codebooks = scale * torch.randn(k, size, dim)
        codebooks[0] = codebooks[0].abs()  # features are >= 0; residuals are centred
        self.register_buffer("codebooks", codebooks)  # [k, codebook_size, latent_dim]
        self.register_buffer("analysis", self._analysis_options())  # [4]

        if not is_random(config.weights):
            self._load(config.weights)

    def _analysis_options(self) -> Tensor:
        c = self.config
        return torch.tensor([c.sample_rate, c.n_fft, c.hop_length, c.compression], dtype=torch.float32)

    # -- weights ------------------------------------------------------------------------------

    def _load(self, weights: str) -> None:
        if weights.lower() == PRETRAINED:
            raise WeightsError(NOT_PUBLISHED)
        path = local_file(
            weights, what="the spectral_rvq codec",
            hint="Write one with `v2a fit <recipe> <slot> <audio files>`.",
        )
        state = load_checkpoint(path)
        expected = {key: value.shape for key, value in self.state_dict().items()}
        if not isinstance(state, Mapping) or set(state) != set(expected):
            found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise WeightsError(
                f"{path} is not a spectral_rvq checkpoint: it holds {found}, expected the tensors "
                f"{sorted(expected)} that save_state(codec.state_dict(), path) writes after fit."
            )
        fitted = [float(v) for v in state["analysis"].flatten()]
        ours = [float(v) for v in self.analysis.flatten()]
        names = ("sample_rate", "n_fft", "hop_length", "compression")
        same = len(fitted) == len(ours) and all(
            math.isclose(a, b, rel_tol=1e-6) for a, b in zip(fitted, ours, strict=True)
        )
        if not same:
            given = ", ".join(f"{n}={v:g}" for n, v in zip(names, fitted, strict=False))
            raise WeightsError(
                f"{path} was fitted with {given}; set the codec's options to these values or fit "
                "it again with yours."
            )
        if tuple(state["codebooks"].shape) != tuple(expected["codebooks"]):
            kk, size, dim = state["codebooks"].shape
            raise WeightsError(
                f"{path} holds {kk} codebooks of {size} entries of width {dim}, but the codec's "
                f"options ask for n_codebooks={self.n_codebooks}, "
                f"codebook_size={self.codebook_size} (width {self.latent_dim}); set them to the "
                "fitted values."
            )
        self.load_state_dict(state, strict=True)

    # -- analysis and synthesis ---------------------------------------------------------------

    def _stft(self, x: Tensor, frames: int) -> Tensor:
        """``x: [b, frames * hop]`` → complex ``[b, f, frames]``; frame ``i`` centred on
        sample ``i * hop`` (the frame centred on the end sample is dropped)."""
        spec = torch.stft(
            x, n_fft=self.n_fft, hop_length=self.hop_length, window=self.window.to(x.dtype),
            center=True, pad_mode="constant", return_complex=True,
        )
        return spec[..., :frames]

    def _istft(self, spec: Tensor, frames: int) -> Tensor:
        """Inverse of :meth:`_stft`: complex ``[b, f, frames]`` → ``[b, frames * hop]``."""
        return torch.istft(
            spec, n_fft=self.n_fft, hop_length=self.hop_length,
            window=self.window.to(spec.real.dtype), center=True, length=frames * self.hop_length,
        )

    def features(self, wav: Tensor) -> Tensor:
        """``wav: [b, c, n]`` → compressed magnitudes ``[b, ceil(n / hop), latent_dim]``."""
        if wav.dim() != 3:
            raise ValueError(f"spectral_rvq expects wav [b, c, n], got {tuple(wav.shape)}")
        mono = wav.to(self.codebooks.dtype).mean(dim=1)  # [b, n]
        frames = math.ceil(mono.shape[-1] / self.hop_length)
        mono = F.pad(mono, (0, frames * self.hop_length - mono.shape[-1]))
        if frames == 0:
            return mono.new_zeros(mono.shape[0], 0, self.latent_dim)
        magnitude = self._stft(mono, frames).abs() / self.magnitude_scale  # [b, f, l]
        return rearrange(magnitude.pow(self.config.compression), "b f l -> b l f")

    def synthesise(self, features: Tensor) -> Tensor:
        """Compressed magnitudes ``[b, l, latent_dim]`` → ``wav [b, 1, l * hop]`` by fast
        Griffin-Lim from the phase of bin-centred sinusoids."""
        b, frames, bins = features.shape
        if frames == 0:
            return features.new_zeros(b, 1, 0)
        magnitude = features.clamp(min=0).pow(1 / self.config.compression) * self.magnitude_scale
        magnitude = rearrange(magnitude, "b l f -> b f l")
        # initial phase: a sinusoid at the centre of bin k advances 2π k hop / n_fft per frame
        k = torch.arange(bins, device=features.device).unsqueeze(1)
        i = torch.arange(frames, device=features.device).unsqueeze(0)
        cycles = (k * i * self.hop_length) % self.n_fft  # exact integers, [f, l]
        phase = cycles.to(features.dtype) * (2 * math.pi / self.n_fft)
        angles = torch.polar(torch.ones_like(phase), phase).expand(b, -1, -1)  # [b, f, l] complex
        previous = torch.zeros_like(angles)
        alpha = self.config.momentum / (1 + self.config.momentum)
        for _ in range(self.config.griffin_lim_iters):
            rebuilt = self._stft(self._istft(magnitude * angles, frames), frames)
            angles = rebuilt - alpha * previous
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        wav = self._istft(magnitude * angles, frames)  # peaks past ±1 are the output stage's job
        return rearrange(wav, "b n -> b 1 n")

    # -- residual VQ --------------------------------------------------------------------------

    def quantise(self, features: Tensor) -> Tensor:
        """``[b, l, latent_dim]`` → codes ``[b, n_codebooks, l]``, coarse level first."""
        b, frames, _ = features.shape
        residual = rearrange(features, "b l f -> (b l) f")
        codes = []
        for codebook in self.codebooks:  # [codebook_size, latent_dim]
            index, _ = nearest(residual, codebook)
            residual = residual - codebook[index]
            codes.append(index)
        return torch.stack(codes).view(self.n_codebooks, b, frames).transpose(0, 1)  # [b, k, l]

    def dequantise(self, codes: Tensor) -> Tensor:
        """codes ``[b, k', l]`` (the first ``k' <= n_codebooks`` levels) → ``[b, l, latent_dim]``."""
        self._check_codes(codes)
        levels = torch.arange(codes.shape[1], device=codes.device).view(1, -1, 1)
        entries = self.codebooks[levels, codes]  # [b, k', l, latent_dim]
        return entries.sum(dim=1)

    def _check_codes(self, codes: Tensor) -> None:
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_codebooks:
            raise ValueError(
                f"spectral_rvq codes must be [b, k, l] with 1 <= k <= {self.n_codebooks}, got "
                f"{tuple(codes.shape)}"
            )
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"spectral_rvq codes must be integers, got {codes.dtype}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"spectral_rvq codes must lie in [0, {self.codebook_size}), got "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )

    # -- the AudioCodec interface -------------------------------------------------------------

    def encode(self, wav: Tensor) -> Tensor:
        """``wav [b, c, n]`` → ``codes [b, n_codebooks, ceil(n / hop_length)]`` int64."""
        return self.quantise(self.features(wav))

    def decode_frames(self, codes: Tensor) -> Tensor:
        """``codes [b, k, l]`` → ``wav [b, 1, l * hop_length]``, nominally in [-1, 1] (not
        clipped: a reconstruction may overshoot, and clipping here would flatten peaks that a
        limiter can still shape); ``decode`` fits it to the length asked for."""
        return self.synthesise(self.dequantise(codes))

    def latents(self, codes: Tensor) -> FeatureSequence:
        """``codes [b, k, l]`` → dequantised compressed magnitudes ``[b, l, latent_dim]``; step
        ``i`` describes time ``i * hop_length / sample_rate``."""
        return FeatureSequence(values=self.dequantise(codes), rate=self.frame_rate)

    # -- fitting ------------------------------------------------------------------------------

    @torch.no_grad()
    def fit(
        self, wavs: Iterable[Tensor], *, max_frames: int = 200_000, iterations: int = 20, seed: int = 0
    ) -> dict:
        """Fit the codebooks on ``wavs`` (each ``[c, n]`` or ``[n]`` at ``sample_rate``).

        At most ``max_frames`` frames are kept, drawn uniformly from all of them; each RVQ
        level is then fitted by k-means (k-means++ seeding, ``iterations`` Lloyd iterations)
        on the residual of the levels before it. Deterministic for a given ``seed``.

        Returns ``{"frames": frames used, "seconds": audio they cover, "energy": mean squared
        feature, "error": [mean squared residual after each level], "relative_error": [error /
        energy per level], "used": [entries chosen at least once, per level]}``.
        """
        if max_frames <= 0 or iterations < 0:
            raise ValueError(
                f"fit needs max_frames > 0 and iterations >= 0, got {max_frames} and {iterations}"
            )
        gen = torch.Generator().manual_seed(seed)
        x = self._sample_frames(wavs, max_frames, gen)  # [n, latent_dim]
        n = x.shape[0]
        if n == 0:
            raise UserError(
                "spectral_rvq.fit got no audio; give it at least one non-empty audio file."
            )
        energy = float(x.pow(2).sum(-1).mean())
        stats = {"frames": n, "seconds": n / self.frame_rate, "energy": energy,
                 "error": [], "relative_error": [], "used": []}
        residual = x
        seed_frames = max(10_000, 40 * self.codebook_size)
        for level in range(self.n_codebooks):
            centres = kmeans(residual, self.codebook_size, iterations=iterations, gen=gen,
                             seed_frames=seed_frames)
            index, _ = nearest(residual, centres)
            residual = residual - centres[index]
            self.codebooks[level] = centres
            error = float(residual.pow(2).sum(-1).mean())
            stats["error"].append(error)
            stats["relative_error"].append(error / energy if energy > 0 else 0.0)
            stats["used"].append(int(torch.unique(index).numel()))
        return stats

    def _sample_frames(self, wavs: Iterable[Tensor], max_frames: int, gen: torch.Generator) -> Tensor:
        """A uniform sample of at most ``max_frames`` feature frames ``[n, latent_dim]`` from
        all the wavs, streaming: every frame gets a random key, the smallest keys stay (the
        pool is cut back whenever it holds twice ``max_frames``)."""
        device = self.codebooks.device
        pool: list[Tensor] = [self.codebooks.new_zeros(0, self.latent_dim)]
        keys: list[Tensor] = [torch.zeros(0)]

        def cut() -> None:
            frames, order = torch.cat(pool), torch.cat(keys)
            keep = order.topk(min(max_frames, len(order)), largest=False).indices.sort().values
            pool[:], keys[:] = [frames[keep.to(device)]], [order[keep]]

        held = 0
        for wav in wavs:
            wav = torch.as_tensor(wav)
            wav = wav.unsqueeze(0) if wav.dim() == 1 else wav
            if wav.dim() != 2:
                raise ValueError(f"spectral_rvq.fit expects waveforms [c, n], got {tuple(wav.shape)}")
            frames = self.features(wav.to(device).unsqueeze(0))[0]  # [l, latent_dim]
            pool.append(frames)
            keys.append(torch.rand(len(frames), generator=gen))
            held += len(frames)
            if held >= 2 * max_frames:
                cut()
                held = max_frames
        cut()
        return pool[0]

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"sample_rate={c.sample_rate}, n_fft={c.n_fft}, hop_length={c.hop_length}, "
            f"n_codebooks={c.n_codebooks}, codebook_size={c.codebook_size}"
        )
