"""The ``passt`` audio encoder's implementation: PaSST-S in the released parameter names, its
log-mel front end, long-clip windowing and weights loading (the plug-in, its options and its
documentation are :mod:`v2a_plugins.audio_encoders.passt`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from v2a import AudioEncoder, FeatureSequence
from v2a.errors import UserError
from v2a.weights import (
    PRETRAINED, WeightsError, check_finite, downloaded_file, is_random, load_checkpoint, load_into,
    state_dict_of,
)
from v2a_plugins.audio_encoders.passt import (
    CHECKPOINT, DOWNLOAD_PAGE, PATCH, RELEASE_URL, SAMPLE_RATE, STRIDE, PasstConfig,
)

# -- the released model's front end (its sizes are in the plug-in module) -------------------------

PREEMPHASIS = 0.97
N_FFT = 1024
WINDOW = 800  # samples of the symmetric Hann window, centred in the 1024-point frame
HOP = 320
F_MIN = 0.0
F_MAX = 15000.0
LOG_OFFSET = 1e-5  # added to the mel power before the natural log
NORM_SHIFT, NORM_SCALE = 4.5, 5.0  # the model's fixed normalisation: (log mel + 4.5) / 5
MLP_RATIO = 4
AUDIOSET_CLASSES = 527
BLOCK_EPS = 1e-6  # the blocks' and the final norm's LayerNorm epsilon
HEAD_EPS = 1e-5  # head.0 is a LayerNorm with torch's default epsilon

WINDOW_SAMPLES = 10 * SAMPLE_RATE  # the longest input the positional embeddings cover
SCENE_HOP = SAMPLE_RATE * 5 // 2  # 2.5 s between the 10 s windows of a longer clip
SCENE_PAD = WINDOW_SAMPLES // 2  # a longer clip is reflected by 5 s at both ends


def frames(samples: int) -> int:
    """STFT frames of a clip of ``samples`` (pre-emphasis leaves one sample fewer)."""
    return 1 + (samples - 1) // HOP


def patches(length: int) -> int:
    """Patches along an axis of ``length`` bins or frames (0 when fewer than one patch)."""
    return max(0, (length - PATCH) // STRIDE + 1)


TIME_PATCHES = patches(frames(WINDOW_SAMPLES))  # 99
MIN_SAMPLES = (PATCH - 1) * HOP + 1  # 4801: 16 frames, one time patch


# -- front end -----------------------------------------------------------------------------------


def kaldi_mel(hz: Tensor) -> Tensor:
    """The mel scale of Kaldi (and HTK): ``1127 ln(1 + f / 700)``."""
    return 1127.0 * torch.log1p(hz / 700.0)


def kaldi_mel_filters(*, mels: int, n_fft: int, sample_rate: int, f_min: float,
                      f_max: float) -> Tensor:
    """``[mels, n_fft // 2 + 1]`` triangular filters with peak 1, evenly spaced on the mel scale
    of :func:`kaldi_mel` from ``f_min`` to ``f_max`` and triangular in mels (Kaldi's filterbank,
    without vocal-tract warping). Filter ``j`` rises from edge ``j`` to a peak at edge ``j + 1``
    and falls to edge ``j + 2`` of ``mels + 2`` equally spaced edges; the Nyquist bin gets no
    weight (Kaldi's bank covers the first ``n_fft // 2`` bins). Computed in float64 on the CPU
    (also inside a ``meta`` device context), rounded once to float32."""
    cpu = torch.device("cpu")
    low, high = (kaldi_mel(torch.tensor(f, dtype=torch.float64, device=cpu)) for f in (f_min, f_max))
    edges = low + (high - low) * torch.arange(mels + 2, dtype=torch.float64, device=cpu) / (mels + 1)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_hz = torch.arange(n_fft // 2, dtype=torch.float64, device=cpu) * (sample_rate / n_fft)
    mel = kaldi_mel(bin_hz)[None, :]
    rising = (mel - left) / (centre - left)
    falling = (right - mel) / (right - centre)
    triangles = rising.minimum(falling).clamp(min=0.0)
    return F.pad(triangles, (0, 1)).float()  # the Nyquist bin: no weight


class LogMel(nn.Module):
    """``mono [b, n]`` → the normalised log-mel ``[b, mels, 1 + (n - 1) // 320]`` of the
    released model (see the module docstring), in float32 or wider. No parameters: the window
    and filters are fixed buffers outside the state dict (the released file has none)."""

    def __init__(self, *, mels: int):
        super().__init__()
        self.register_buffer("window", torch.hann_window(WINDOW, periodic=False, dtype=torch.float64,
                                                          device="cpu").float(), persistent=False)
        self.register_buffer("filters", kaldi_mel_filters(
            mels=mels, n_fft=N_FFT, sample_rate=SAMPLE_RATE, f_min=F_MIN, f_max=F_MAX),
            persistent=False)

    def power(self, mono: Tensor) -> Tensor:
        """``mono [b, n]`` → the power spectrogram of its pre-emphasised signal ``[b, 513, t]``."""
        mono = mono.to(torch.promote_types(mono.dtype, torch.float32))
        emphasised = mono[:, 1:] - PREEMPHASIS * mono[:, :-1]
        spectrum = torch.stft(emphasised, N_FFT, hop_length=HOP, win_length=WINDOW,
                              window=self.window.to(mono.dtype), center=True, pad_mode="reflect",
                              normalized=False, return_complex=True)
        return spectrum.real.square() + spectrum.imag.square()

    def forward(self, mono: Tensor) -> Tensor:
        power = self.power(mono)
        mel = self.filters.to(power.dtype) @ power
        return (torch.log(mel + LOG_OFFSET) + NORM_SHIFT) / NORM_SCALE


# -- network -------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Overlapping patches: a 16x16 convolution with stride 10 over ``[b, 1, mels, t]``."""

    def __init__(self, *, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=PATCH, stride=STRIDE)

    def forward(self, x: Tensor) -> Tensor:  # [b, 1, f, t] -> [b, dim, F, T]
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection and an output ``proj``."""

    def __init__(self, *, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:  # [b, n, dim]
        b, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head dim)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, dim))


class Mlp(nn.Module):
    """``fc1`` (4x wider), exact GELU, ``fc2``."""

    def __init__(self, *, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, MLP_RATIO * dim)
        self.fc2 = nn.Linear(MLP_RATIO * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm ViT block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, *, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.attn = Attention(dim=dim, heads=heads)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.mlp = Mlp(dim=dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AudioTooShortError(UserError):
    """A clip shorter than one PaSST patch."""


class Passt(AudioEncoder):
    """PaSST-S at 32 kHz: ``encode(wav [b, c, n])`` → the clip features ``[b, 1, dim]`` (rate
    ``sample_rate / n``, start 0), ``classify(wav)`` → ``[b, 527]`` sigmoid probabilities.
    Channels are mixed to mono. Its ``state_dict`` is the released key layout.

    Implements :class:`v2a.interfaces.AudioClassifier` (``multi_label = True``).
    """

    multi_label = True

    def __init__(self, config: PasstConfig | None = None):
        super().__init__()
        config = config or PasstConfig()
        self.config = config
        self.sample_rate = SAMPLE_RATE
        self.dim = config.dim
        self.rate = 1.0  # one step per clip: the rate of a one-second clip's sequence
        self.class_names = tuple(f"class_{i:03d}" for i in range(AUDIOSET_CLASSES))
        d = config.dim
        self.front_end = LogMel(mels=config.mels)
        self.patch_embed = PatchEmbed(dim=d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, d))  # for the cls and dist tokens
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, d, patches(config.mels), 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, d, 1, TIME_PATCHES))
        self.blocks = nn.ModuleList(Block(dim=d, heads=config.heads) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=BLOCK_EPS)
        self.head = nn.Sequential(nn.LayerNorm(d, eps=HEAD_EPS), nn.Linear(d, AUDIOSET_CLASSES))
        self.head_dist = nn.Linear(d, AUDIOSET_CLASSES)  # loaded, not used at inference
        self._initialise()
        if not is_random(config.weights):
            where, state = released_state(config.weights)
            load_into(self, with_4d_patch_kernel(self, state), where, f"PaSST {config_text(config)}")

    def _initialise(self) -> None:
        for p in (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed,
                  self.time_new_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def log_mel(self, wav: Tensor) -> Tensor:
        """``wav [b, c, n]`` → the normalised log-mel ``[b, mels, 1 + (n - 1) // 320]``."""
        if wav.dim() != 3:
            raise ValueError(f"Passt expects wav [b, c, n], got {tuple(wav.shape)}")
        n = wav.shape[-1]
        if n < MIN_SAMPLES:
            raise AudioTooShortError(
                f"PaSST needs at least {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE:.2f} s at "
                f"{SAMPLE_RATE} Hz) per clip, got {n}; pad or lengthen the audio."
            )
        return self.front_end(wav.mean(dim=1))

    def window_outputs(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        """One pass over a log-mel of at most 10 s ``[b, mels, t]`` → ``(features [b, dim],
        logits [b, 527])``."""
        x = self.patch_embed(mel.to(self.cls_token.dtype).unsqueeze(1))  # [b, d, F, T]
        if x.shape[-1] > TIME_PATCHES:
            raise ValueError(f"{x.shape[-1]} time patches exceed the {TIME_PATCHES} the model has")
        x = x + self.time_new_pos_embed[..., :x.shape[-1]] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)  # [b, F * T, d], frequency-major
        b = x.shape[0]
        tokens = torch.cat([self.cls_token, self.dist_token], dim=1) + self.new_pos_embed
        x = torch.cat([tokens.expand(b, -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        features = (x[:, 0] + x[:, 1]) / 2
        return features, self.head(features)

    def outputs(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        """``wav [b, c, n]`` → ``(features [b, dim], logits [b, 527])``: one pass up to 10 s,
        else the mean over the HEAR wrapper's 10 s windows (see the module docstring)."""
        if wav.dim() == 3 and wav.shape[-1] > WINDOW_SAMPLES:
            mono = F.pad(wav.mean(dim=1, keepdim=True), (SCENE_PAD, SCENE_PAD), mode="reflect")
            windows = mono.unfold(-1, WINDOW_SAMPLES, SCENE_HOP)  # [b, 1, windows, 10 s]
            passes = [self.window_outputs(self.log_mel(windows[:, :, i]))
                      for i in range(windows.shape[2])]
            features, logits = (torch.stack(parts).mean(dim=0) for parts in zip(*passes))
            return features, logits
        return self.window_outputs(self.log_mel(wav))

    def encode(self, wav: Tensor) -> FeatureSequence:
        features, _ = self.outputs(wav)
        return FeatureSequence(values=features.unsqueeze(1), rate=self.sample_rate / wav.shape[-1],
                               start=0.0)

    def classify(self, wav: Tensor) -> Tensor:
        """``wav [b, c, n]`` → ``[b, 527]`` independent class probabilities (sigmoid), in
        float64: a float32 sigmoid rounds to 1 above a logit of about 17, and evaluation's
        KL and IS recover the logits from the probabilities (``v2a.metrics.classes``)."""
        _, logits = self.outputs(wav)
        return torch.sigmoid(logits.double())


# -- weights -------------------------------------------------------------------------------------


def config_text(config: PasstConfig) -> str:
    return f"(depth {config.depth}, dim {config.dim}, heads {config.heads}, {config.mels} mels)"


def download_released() -> dict:
    """The released checkpoint, downloaded once into torch's hub cache and read weights-only."""
    try:
        return torch.hub.load_state_dict_from_url(RELEASE_URL, map_location="cpu", check_hash=False,
                                                  weights_only=True, file_name=CHECKPOINT)
    except Exception as exc:
        raise WeightsError(
            f"could not download or read the released PaSST weights from {RELEASE_URL} "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
            f"download {CHECKPOINT} on a machine with internet and give its path as the weights option."
        ) from None


def released_state(weights: str) -> tuple[str, dict[str, Tensor]]:
    """Where the weights come from and the state dict they hold (a ``"model"`` entry, or the
    whole file when it is a bare state dict)."""
    if weights.strip().lower() == PRETRAINED:
        loaded, where = download_released(), RELEASE_URL
        check_finite(loaded, where)
    else:
        path = downloaded_file(weights, model="PaSST", file=CHECKPOINT, page=DOWNLOAD_PAGE)
        loaded, where = load_checkpoint(path), str(path)
    return where, state_dict_of(loaded, where, what="PaSST's weights")


def with_4d_patch_kernel(model: Passt, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with a flattened ``patch_embed.proj.weight`` ``[dim, 1, 256]`` (older PaSST
    files, from before the patches were a convolution) reshaped to the convolution's kernel."""
    key = "patch_embed.proj.weight"
    own = model.patch_embed.proj.weight
    kernel = state.get(key)
    if kernel is not None and kernel.dim() < 4 and kernel.numel() == own.numel():
        return {**state, key: kernel.reshape(own.shape)}
    return state

