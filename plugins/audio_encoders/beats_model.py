"""The ``beats`` audio encoder's implementation: the BEATs network in the official parameter
names, its Kaldi filterbank front end and checkpoint loading (the plug-in, its options and its
documentation are :mod:`v2a_plugins.audio_encoders.beats`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from v2a import AudioEncoder, FeatureSequence
from v2a.errors import UserError
from v2a.schema import SchemaError, validate
from v2a.weights import WeightsError, is_random, load_checkpoint
from v2a_plugins.audio_encoders.beats import (
    ARCHITECTURE, FRAME_SHIFT_MS, SAMPLE_RATE, BeatsConfig, checkpoint_path,
)

# -- constants of the reference preprocessing ----------------------------------------------------

MEL_BINS = 128
FRAME_LENGTH_MS = 25.0
FBANK_MEAN = 15.41663  # statistics of the reference's log-mel features (fixed, not learnt)
FBANK_STD = 6.55582
WINDOW = round(SAMPLE_RATE * FRAME_LENGTH_MS / 1000)  # 400 samples
HOP = round(SAMPLE_RATE * FRAME_SHIFT_MS / 1000)  # 160 samples

#: What the reference's ``BEATsConfig`` assumes for an architecture key a checkpoint's cfg lacks
#: (``input_patch_size`` has no usable default there, so a cfg must give it).
REFERENCE_DEFAULTS: dict[str, Any] = {
    "embed_dim": 512, "conv_bias": False, "encoder_layers": 12, "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_norm_first": False, "deep_norm": False, "conv_pos": 128, "conv_pos_groups": 16,
    "relative_position_embedding": False, "num_buckets": 320, "max_distance": 1280,
    "gru_rel_pos": False,
}


# -- preprocessing -------------------------------------------------------------------------------


def filterbank(mono: Tensor) -> Tensor:
    """``[b, n]`` in [-1, 1] at 16 kHz → normalised Kaldi log-mel ``[b, frames, 128]``.

    ``frames = 1 + (n - 400) // 160`` (Kaldi's ``snip_edges``). The reference scales the waveform
    to 16-bit integer range, then maps the log-mel values with ``(x - mean) / (2 * std)``.
    """
    from torchaudio.compliance import kaldi  # optional dependency: imported when used

    rows = [
        kaldi.fbank(
            row.unsqueeze(0) * 2**15, num_mel_bins=MEL_BINS, sample_frequency=SAMPLE_RATE,
            frame_length=FRAME_LENGTH_MS, frame_shift=FRAME_SHIFT_MS, dither=0.0,
        )
        for row in mono
    ]
    return (torch.stack(rows) - FBANK_MEAN) / (2 * FBANK_STD)


def num_frames(num_samples: int) -> int:
    """Filterbank frames of ``num_samples`` samples (0 when shorter than one window)."""
    return 0 if num_samples < WINDOW else 1 + (num_samples - WINDOW) // HOP


# -- helpers -------------------------------------------------------------------------------------


class ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``ratio`` backward (layer-wise decay)."""

    @staticmethod
    def forward(ctx, x: Tensor, ratio: float) -> Tensor:
        ctx.ratio = ratio
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.ratio, None


def activation(name: str):
    return {"gelu": F.gelu, "relu": F.relu}[name]


def relative_position_buckets(
    query_length: int, key_length: int, *, num_buckets: int, max_distance: int, device=None
) -> Tensor:
    """``[query_length, key_length]`` int64 bucket of each offset ``key - query`` (T5 style).

    Half the buckets are for keys after the query, half for keys before (or at) it. Within a
    half, distances below a quarter of ``num_buckets`` get a bucket each; larger ones share
    logarithmically wider buckets up to ``max_distance``, beyond which all fall in the last.
    Computed in float32 like the reference, so bucket edges are the same.
    """
    offset = (
        torch.arange(key_length, device=device)[None, :]
        - torch.arange(query_length, device=device)[:, None]
    )
    half = num_buckets // 2
    exact = half // 2
    distance = offset.abs()
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return (offset > 0).long() * half + torch.where(distance < exact, distance, far)


# -- blocks --------------------------------------------------------------------------------------


class WeightNormConv1d(nn.Module):
    """Grouped 1-d convolution with weight normalisation over the kernel axis.

    ``weight = weight_v * weight_g / ||weight_v||``, the norm taken over the input and output
    channels for each kernel tap (``nn.utils.weight_norm(conv, dim=2)``, whose parameter names
    the official checkpoints use: ``weight_g [1, 1, k]``, ``weight_v [d, d / groups, k]``).
    """

    def __init__(self, *, channels: int, kernel_size: int, groups: int):
        super().__init__()
        self.padding, self.groups = kernel_size // 2, groups
        v = torch.randn(channels, channels // groups, kernel_size)
        v = v * math.sqrt(4.0 / (kernel_size * channels))  # the reference's initial scale
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(self._norm(v))
        self.bias = nn.Parameter(torch.zeros(channels))

    @staticmethod
    def _norm(v: Tensor) -> Tensor:
        return v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()  # [1, 1, k]

    def forward(self, x: Tensor) -> Tensor:  # [b, d, s] -> [b, d, s + 1 - k % 2]
        weight = self.weight_v * (self.weight_g / self._norm(self.weight_v))
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class TrimLast(nn.Module):
    """Drop the extra step an even kernel with ``k // 2`` padding adds (keeps length ``s``)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.trim = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:  # [b, d, s']
        return x[..., : x.shape[-1] - self.trim]


class MultiheadAttention(nn.Module):
    """Self-attention with a bucketed relative position bias, optionally gated by the query.

    The gate (WavLM's "gated relative position bias") scales the bias of each query row by
    ``a * (b * grep_a - 1) + 2`` where ``a, b = sigmoid`` of two sums of four outputs of
    ``grep_linear(q_head)``: a per-head, per-query scalar in ``(1, 1 + grep_a)`` for ``grep_a > 0``.
    """

    def __init__(
        self, *, dim: int, heads: int, dropout: float, gated: bool,
        relative_attention_bias: nn.Embedding | None, num_buckets: int, max_distance: int,
    ):
        super().__init__()
        assert dim % heads == 0, "encoder_embed_dim must be divisible by encoder_attention_heads"
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        # one table shared by every layer (registered in each, as the checkpoints store it)
        self.relative_attention_bias = relative_attention_bias
        self.gated = gated
        if gated:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def position_bias(self, length: int) -> Tensor:
        """``[heads, length, length]``: the bias of key ``j`` for query ``i``."""
        table = self.relative_attention_bias
        buckets = relative_position_buckets(
            length, length, num_buckets=self.num_buckets, max_distance=self.max_distance,
            device=table.weight.device,
        )
        return rearrange(table(buckets), "q k h -> h q k")

    def gate(self, q: Tensor) -> Tensor:
        """``q: [b, h, s, e]`` (unscaled queries) → ``[b, h, s, 1]`` bias multiplier per query."""
        logits = reduce(self.grep_linear(q), "b h s (two four) -> b h s two", "sum", two=2)
        a, b = logits.sigmoid().chunk(2, dim=-1)
        return a * (b * self.grep_a - 1.0) + 2.0

    def forward(self, x: Tensor, position_bias: Tensor | None) -> Tensor:
        # x: [b, s, d]; position_bias: [h, s, s] or None
        q, k, v = (
            rearrange(proj(x), "b s (h e) -> b h s e", h=self.heads)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        bias = None
        if position_bias is not None:
            bias = position_bias.unsqueeze(0)  # [1, h, s, s]
            if self.gated:
                bias = self.gate(q) * bias  # [b, h, s, s]
            bias = bias.to(q.dtype)
        # softmax(q k^T / sqrt(e) + bias) v: the reference's shift-by-max trick is the same function
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(rearrange(out, "b h s e -> b s (h e)"))


class TransformerSentenceEncoderLayer(nn.Module):
    """Attention and feed-forward, post-LN with DeepNet residual scaling (or pre-LN)."""

    def __init__(self, config: BeatsConfig, relative_attention_bias: nn.Embedding | None):
        super().__init__()
        dim = config.encoder_embed_dim
        self.self_attn = MultiheadAttention(
            dim=dim, heads=config.encoder_attention_heads, dropout=config.attention_dropout,
            gated=config.gru_rel_pos,  # the gate's parameters exist even without a bias to gate
            relative_attention_bias=relative_attention_bias, num_buckets=config.num_buckets,
            max_distance=config.max_distance,
        )
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = activation(config.activation_fn)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.activation_dropout)
        self.dropout3 = nn.Dropout(config.dropout)
        self.layer_norm_first = config.layer_norm_first
        deep = config.deep_norm and not config.layer_norm_first
        self.residual_scale = (2 * config.encoder_layers) ** 0.25 if deep else 1.0

    def feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout3(self.fc2(self.dropout2(self.activation(self.fc1(x)))))

    def forward(self, x: Tensor, position_bias: Tensor | None) -> Tensor:  # [b, s, d]
        if self.layer_norm_first:
            x = x + self.dropout1(self.self_attn(self.self_attn_layer_norm(x), position_bias))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(
            x * self.residual_scale + self.dropout1(self.self_attn(x, position_bias))
        )
        return self.final_layer_norm(x * self.residual_scale + self.feed_forward(x))


class TransformerEncoder(nn.Module):
    """Convolutional positional embedding, then the layers (bias computed once, in layer 0)."""

    def __init__(self, config: BeatsConfig):
        super().__init__()
        dim = config.encoder_embed_dim
        self.pos_conv = nn.Sequential(
            WeightNormConv1d(channels=dim, kernel_size=config.conv_pos, groups=config.conv_pos_groups),
            TrimLast(config.conv_pos),
            nn.GELU(),
        )
        table = None
        if config.relative_position_embedding:
            table = nn.Embedding(config.num_buckets, config.encoder_attention_heads)
        self.layers = nn.ModuleList(
            [TransformerSentenceEncoderLayer(config, table) for _ in range(config.encoder_layers)]
        )
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = config.layer_norm_first
        self.dropout = config.dropout
        self.layerdrop = config.encoder_layerdrop
        self.gradient_decay = config.layer_wise_gradient_decay_ratio
        self._init_weights(config)

    def _init_weights(self, config: BeatsConfig) -> None:
        """BERT-style N(0, 0.02) linears and embeddings, then DeepNet gains (as the reference)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        if config.deep_norm and not config.layer_norm_first:
            beta = (8 * config.encoder_layers) ** -0.25
            for layer in self.layers:
                attn = layer.self_attn
                for linear, gain in ((attn.k_proj, 1.0), (attn.v_proj, beta), (attn.q_proj, 1.0),
                                     (attn.out_proj, beta), (layer.fc1, beta), (layer.fc2, beta)):
                    nn.init.xavier_normal_(linear.weight, gain=gain)

    def forward(self, x: Tensor) -> Tensor:  # [b, s, d] -> [b, s, d]
        x = x + rearrange(self.pos_conv(rearrange(x, "b s d -> b d s")), "b d s -> b s d")
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, p=self.dropout, training=self.training)
        first = self.layers[0].self_attn
        bias = first.position_bias(x.shape[1]) if first.relative_attention_bias is not None else None
        for layer in self.layers:
            if self.gradient_decay != 1.0 and torch.is_grad_enabled():
                x = ScaleGrad.apply(x, self.gradient_decay)
            if self.training and self.layerdrop > 0 and float(torch.rand(())) < self.layerdrop:
                continue
            x = layer(x, bias)
        return self.layer_norm(x) if self.layer_norm_first else x


# -- model ---------------------------------------------------------------------------------------


class BEATs(nn.Module):
    """The BEATs backbone: normalised filterbank ``[b, frames, 128]`` → tokens ``[b, t * f, d]``.

    Tokens are ordered time-major: token ``i * f + j`` is time patch ``i``, frequency patch ``j``
    (``f = 128 // input_patch_size``). Its ``state_dict`` has the official key names.
    """

    def __init__(self, config: BeatsConfig):
        super().__init__()
        self.config = config
        self.patch_size = config.input_patch_size
        self.freq_patches = MEL_BINS // config.input_patch_size
        self.patch_embedding = nn.Conv2d(
            1, config.embed_dim, kernel_size=self.patch_size, stride=self.patch_size,
            bias=config.conv_bias,
        )
        self.layer_norm = nn.LayerNorm(config.embed_dim)
        self.post_extract_proj = (
            nn.Linear(config.embed_dim, config.encoder_embed_dim)
            if config.embed_dim != config.encoder_embed_dim else None
        )
        self.dropout_input = nn.Dropout(config.dropout_input)
        self.encoder = TransformerEncoder(config)

    def forward(self, fbank: Tensor) -> Tensor:
        patches = self.patch_embedding(rearrange(fbank, "b n m -> b 1 n m"))  # [b, c, t, f]
        x = self.layer_norm(rearrange(patches, "b c t f -> b (t f) c"))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder(self.dropout_input(x))  # [b, t * f, d]


# -- weights -------------------------------------------------------------------------------------


def resolve_weights(config: BeatsConfig) -> tuple[BeatsConfig, dict[str, Tensor] | None, str]:
    """The effective options and the state dict to load (``None`` for random weights)."""
    weights = config.weights
    if is_random(weights):
        return config, None, ""
    path = checkpoint_path(weights)
    loaded = load_checkpoint(path)
    if not isinstance(loaded, Mapping):
        raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a BEATs checkpoint.")
    if "model" in loaded:  # the official layout: {"cfg": {...}, "model": state dict, ...}
        state, cfg = loaded["model"], loaded.get("cfg")
        if cfg is not None:
            if not isinstance(cfg, Mapping):
                raise WeightsError(f"{path} has a 'cfg' that is a {type(cfg).__name__}, not a mapping.")
            config = merge_checkpoint_cfg(config, cfg, path)
    else:  # a bare state dict of this model, or of the whole component (keys "beats....")
        state = loaded
        if state and all(key.startswith("beats.") for key in state):
            state = {key[len("beats."):]: value for key, value in state.items()}
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors where BEATs weights belong.")
    return config, dict(state), str(path)


def merge_checkpoint_cfg(config: BeatsConfig, cfg: Mapping[str, Any], path: Path) -> BeatsConfig:
    """``config`` with the architecture of a checkpoint's ``cfg`` (see the module docstring)."""
    if "input_patch_size" not in cfg:
        raise WeightsError(f"the cfg of {path} has no input_patch_size, so it is not a BEATs checkpoint.")
    defaults = BeatsConfig()
    options = dataclasses.asdict(config)
    for name in ARCHITECTURE:
        theirs = cfg.get(name, REFERENCE_DEFAULTS.get(name))
        ours = options[name]
        if ours != getattr(defaults, name) and ours != theirs:
            raise WeightsError(
                f"option {name}={ours!r} contradicts the checkpoint {path}, whose cfg says "
                f"{theirs!r}; remove the option (a checkpoint's cfg decides the architecture)."
            )
        options[name] = theirs
    try:
        return validate(options, BeatsConfig)
    except SchemaError as exc:
        raise WeightsError(f"the cfg of {path} is not a usable BEATs configuration: {exc}.") from None


def load_beats_state(model: BEATs, state: dict[str, Tensor], source: str) -> None:
    """Load an official-layout state dict into ``model`` (strictly, after two adjustments).

    The fine-tuned checkpoints' classifier (``predictor.*``) is dropped. The relative position
    table is shared by all layers; only layer 0's copy is ever used (the bias is computed there),
    so it is the one kept, and a file that stores it only once loads too.
    """
    state = {k: v for k, v in state.items() if not k.startswith("predictor.")}
    table = "encoder.layers.0.self_attn.relative_attention_bias.weight"
    if table in state:
        for i in range(1, len(model.encoder.layers)):
            state[f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"] = state[table]
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong)):
            if keys:
                more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
                problems.append(f"{label} {', '.join(keys[:3])}{more}")
        raise WeightsError(
            f"{source} does not fit the BEATs architecture of its cfg and options "
            f"({'; '.join(problems)})."
        )
    model.load_state_dict(state, strict=True)


# -- component -----------------------------------------------------------------------------------


class AudioTooShortError(UserError):
    """A waveform shorter than one patch of filterbank frames."""


class BeatsEncoder(AudioEncoder):
    """BEATs features per time patch: ``wav [b, c, n]`` at 16 kHz → ``[b, t, dim]`` at 6.25 Hz.

    Channels are mixed to mono. ``t = frames // input_patch_size`` with ``frames = 1 + (n - 400)
    // 160``; the tokens of the frequency patches of a time step are averaged. ``start`` is the
    centre of the first patch's span (0.0875 s for 16-frame patches).
    """

    def __init__(self, config: BeatsConfig | None = None):
        super().__init__()
        config, state, source = resolve_weights(config or BeatsConfig())
        if config.input_patch_size <= 0 or MEL_BINS % config.input_patch_size:
            raise UserError(
                f"BEATs input_patch_size must divide the {MEL_BINS} mel bins, got {config.input_patch_size}."
            )
        self.config = config
        self.beats = BEATs(config)
        if state is not None:
            load_beats_state(self.beats, state, source)
        patch = config.input_patch_size
        self.sample_rate = SAMPLE_RATE
        self.dim = config.encoder_embed_dim
        self.rate = 1000.0 / FRAME_SHIFT_MS / patch  # 6.25 Hz
        self.min_samples = WINDOW + (patch - 1) * HOP  # one patch of frames: 2800 samples
        self.start = self.min_samples / 2 / SAMPLE_RATE  # centre of the first patch: 0.0875 s

    def num_steps(self, num_samples: int) -> int:
        """Feature steps ``encode`` returns for ``num_samples`` samples."""
        return num_frames(num_samples) // self.config.input_patch_size

    def encode(self, wav: Tensor) -> FeatureSequence:
        if wav.dim() != 3:
            raise ValueError(f"BeatsEncoder.encode expects wav [b, c, n], got {tuple(wav.shape)}")
        n = wav.shape[-1]
        if n < self.min_samples:
            raise AudioTooShortError(
                f"BEATs needs at least {self.min_samples} samples ({self.min_samples / SAMPLE_RATE:.4f} s "
                f"at {SAMPLE_RATE} Hz) to fill one patch, got {n}; pad or lengthen the audio"
            )
        dtype = self.beats.patch_embedding.weight.dtype
        mono = wav.mean(dim=1)  # [b, n]
        if mono.dtype in (torch.float16, torch.bfloat16):
            mono = mono.float()  # the filterbank wants at least float32
        fbank = filterbank(mono).to(dtype)  # [b, frames, 128]
        tokens = self.beats(fbank)  # [b, t * f, dim]
        values = reduce(tokens, "b (t f) d -> b t d", "mean", f=self.beats.freq_patches)
        return FeatureSequence(values=values, rate=self.rate, start=self.start)

