"""The SparseSync implementation: the S3D feature-map visual encoder, the audio tower, the
selectors and classifier, and :class:`SparseSync` (the plug-ins, their options and their
documentation are :mod:`v2a_plugins.rerankers.sparsesync`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from v2a import FeatureSequence, VisualEncoder
from v2a.sequences import first_frame_time
from v2a.weights import WeightsError, is_random, load_checkpoint, load_into
from v2a_plugins.rerankers.offset_scoring import OffsetReranker
from v2a_plugins.rerankers.offset_scoring import window_starts as offset_windows
from v2a_plugins.rerankers.sparsesync import (
    FPS,
    HOP,
    LOG_FLOOR,
    MAX_OFFSET,
    N_FFT,
    NORM_EPS,
    NUM_OFFSETS,
    SAMPLE_RATE,
    STEP_SECONDS,
    SparseSyncConfig,
    SparseSyncVisualConfig,
    grid_side,
    halvings,
    sparsesync_file,
)
from v2a_plugins.visual_encoders.s3d import DIM as S3D_DIM
from v2a_plugins.visual_encoders.s3d import FIRST_CENTRE, IMAGENET, STRIDE
from v2a_plugins.visual_encoders.s3d_model import build_s3d, resize_and_crop


# -- visual encoder --------------------------------------------------------------------------------


class SparseSyncVisualEncoder(VisualEncoder):
    """S3D feature maps: frames ``[b, t, 3, h, w]`` in [0, 1] at ``fps`` → ``[b, t', g * g *
    1024]`` at ``fps / 8`` (``g = crop / 32``, layout ``(h w d)``), from ``times[0] + 2 / fps``."""

    def __init__(self, config: SparseSyncVisualConfig | None = None):
        super().__init__()
        self.config = c = config or SparseSyncVisualConfig()
        if is_random(c.weights):
            network = build_s3d("none")
        else:
            network = build_s3d(str(sparsesync_file(c.weights, "the sparsesync visual encoder")))
        self.features = network.features
        self.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET[0]).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET[1]).view(3, 1, 1), persistent=False)
        self.fps = float(c.fps)
        self.rate = self.fps / STRIDE
        self.frame_size = (c.crop, c.crop)
        self.dim = grid_side(c.crop) ** 2 * S3D_DIM
        self.eval()

    def train(self, mode: bool = True) -> SparseSyncVisualEncoder:
        """Frozen: the BatchNorm layers keep their statistics in any mode."""
        super().train(mode)
        self.features.eval()
        return self

    def encode(self, frames: Tensor, times: Tensor) -> FeatureSequence:
        b, t = frames.shape[:2]
        c = self.config
        start = first_frame_time(times, t) + FIRST_CENTRE / self.fps
        frames = frames.to(self.mean.dtype)
        if t < STRIDE:  # too short for S3D's strides: repeat the last frame
            frames = torch.cat([frames, frames[:, -1:].expand(-1, STRIDE - t, -1, -1, -1)], dim=1)
        images = resize_and_crop(rearrange(frames, "b t c h w -> (b t) c h w"), c.resize)
        top = round((c.resize - c.crop) / 2)
        images = (images[..., top:top + c.crop, top:top + c.crop] - self.mean) / self.std
        feature_map = self.features(rearrange(images, "(b t) c h w -> b c t h w", b=b))
        values = rearrange(feature_map, "b d t h w -> b t (h w d)")
        return FeatureSequence(values=values, rate=self.rate, start=start)


# -- audio tower -------------------------------------------------------------------------------------


class AudioResNet(nn.Module):
    """torchvision's ResNet-18 on a 1-channel spectrogram, up to ``layer4`` (no pooling, no fc):
    ``[n, 1, f, t]`` → ``[n, 512, ceil(f / 32), ceil(t / 32)]``."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        self.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1, self.maxpool = net.bn1, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, spec: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(spec))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def log_spectrogram(wav: Tensor) -> Tensor:
    """``[n, samples]`` → standardised log power spectrogram ``[n, 257, samples // 128 + 1]``."""
    window = torch.hann_window(N_FFT, dtype=wav.dtype, device=wav.device)
    spec = torch.stft(wav, N_FFT, HOP, N_FFT, window, center=True, pad_mode="reflect",
                      return_complex=True).abs().pow(2)
    spec = torch.log(spec + LOG_FLOOR)
    return (spec - spec.mean(dim=-1, keepdim=True)) / (spec.std(dim=-1, keepdim=True) + NORM_EPS)


# -- selectors and classifier ------------------------------------------------------------------------


def holder(**modules: nn.Module) -> nn.Module:
    """A module whose children are ``modules`` (to give parameters the checkpoint's names)."""
    module = nn.Module()
    for name, child in modules.items():
        setattr(module, name, child)
    return module


class Attention(nn.Module):
    """Multi-head attention with separate ``key``/``query``/``value``/``proj`` projections;
    ``context`` defaults to ``x`` (self-attention)."""

    def __init__(self, *, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.key, self.query, self.value, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        q, k, v = (rearrange(p(s), "b t (h e) -> b h t e", h=self.heads)
                   for p, s in ((self.query, x), (self.key, context), (self.value, context)))
        return self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h t e -> b t (h e)"))


def mlp(dim: int) -> nn.Sequential:
    """Linear to ``4 * dim``, GELU, linear back (keys ``mlp.0``, ``mlp.2``)."""
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class EncoderBlock(nn.Module):
    """Pre-LN self-attention and MLP."""

    def __init__(self, *, dim: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn, self.mlp = Attention(dim=dim, heads=heads), mlp(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CrossBlock(nn.Module):
    """Pre-LN self-attention, cross-attention to ``context``, MLP (a decoder layer)."""

    def __init__(self, *, dim: int, heads: int):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn, self.xattn = Attention(dim=dim, heads=heads), Attention(dim=dim, heads=heads)
        self.mlp = mlp(dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        x = x + self.xattn(self.ln2(x), context)
        return x + self.mlp(self.ln3(x))


class Selector(nn.Module):
    """``selectors`` learned queries (with learned positions) reading ``context [b, n, d]``
    through ``depth`` cross blocks → ``[b, selectors, d]``."""

    def __init__(self, *, selectors: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.selectors = nn.Parameter(torch.randn(selectors, dim))
        self.selectors_pos_emb = holder(time_embed=nn.Embedding(selectors, dim))
        nn.init.uniform_(self.selectors_pos_emb.time_embed.weight)
        self.blocks = nn.ModuleList(CrossBlock(dim=dim, heads=heads) for _ in range(depth))

    def forward(self, context: Tensor) -> Tensor:
        x = self.selectors + self.selectors_pos_emb.time_embed.weight
        x = x.expand(context.shape[0], -1, -1)
        for block in self.blocks:
            x = block(x, context)
        return x


def split_width(dim: int, parts: int) -> list[int]:
    """``dim`` shared among ``parts`` axes, the first (time) taking the remainder."""
    return [dim // parts + dim % parts] + [dim // parts] * (parts - 1)


class SyncTransformer(nn.Module):
    """Visual ``[b, t, h, w, d]`` and audio ``[b, f, t, d]`` features → ``[b, 21]`` logits in
    the official label order."""

    def __init__(self, *, dim: int, depth: int, heads: int, selectors: int,
                 visual_shape: tuple[int, int, int], audio_shape: tuple[int, int]):
        super().__init__()
        self.pre_lnorm_vis, self.pre_lnorm_aud = nn.LayerNorm(dim), nn.LayerNorm(dim)
        (t, h, w), (f, ta) = visual_shape, audio_shape
        dt, dh, dw = split_width(dim, 3)
        self.vis_pos_emb = holder(time_embed=nn.Embedding(t, dt), height_embed=nn.Embedding(h, dh),
                                  width_embed=nn.Embedding(w, dw))
        da_t, da_f = split_width(dim, 2)
        self.aud_pos_emb = holder(freq_embed=nn.Embedding(f, da_f), time_embed=nn.Embedding(ta, da_t))
        self.v_selector = Selector(selectors=selectors, dim=dim, depth=depth, heads=heads)
        self.a_selector = Selector(selectors=selectors, dim=dim, depth=depth, heads=heads)
        self.global_transformer = holder(
            vis_in_lnorm=nn.LayerNorm(dim), aud_in_lnorm=nn.LayerNorm(dim),
            blocks=nn.Sequential(*(EncoderBlock(dim=dim, heads=heads) for _ in range(depth))),
            ln_f=nn.LayerNorm(dim),
        )
        self.global_transformer.OFF_tok = nn.Parameter(torch.randn(1, 1, dim))
        self.global_transformer.MOD_tok = nn.Parameter(torch.randn(1, 1, dim))
        self.off_head = nn.Linear(dim, NUM_OFFSETS, bias=False)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for table in (*self.vis_pos_emb.children(), *self.aud_pos_emb.children()):
            nn.init.uniform_(table.weight)

    def visual_positions(self, t: int, h: int, w: int) -> Tensor:
        """``[t, h, w, d]``: time, width, height tables concatenated (the official order)."""
        e = self.vis_pos_emb
        parts = (e.time_embed.weight[:t, None, None].expand(t, h, w, -1),
                 e.width_embed.weight[None, None, :w].expand(t, h, w, -1),
                 e.height_embed.weight[None, :h, None].expand(t, h, w, -1))
        return torch.cat(parts, dim=-1)

    def audio_positions(self, f: int, t: int) -> Tensor:
        """``[f, t, d]``: frequency then time tables concatenated."""
        e = self.aud_pos_emb
        return torch.cat([e.freq_embed.weight[:f, None].expand(f, t, -1),
                          e.time_embed.weight[None, :t].expand(f, t, -1)], dim=-1)

    def forward(self, visual: Tensor, audio: Tensor) -> Tensor:
        visual = self.pre_lnorm_vis(visual) + self.visual_positions(*visual.shape[1:4])
        audio = self.pre_lnorm_aud(audio) + self.audio_positions(*audio.shape[1:3])
        v = self.v_selector(rearrange(visual, "b t h w d -> b (t h w) d"))
        a = self.a_selector(rearrange(audio, "b f t d -> b (f t) d"))
        g, b = self.global_transformer, visual.shape[0]
        x = torch.cat([g.OFF_tok.expand(b, -1, -1), g.vis_in_lnorm(v),
                       g.MOD_tok.expand(b, -1, -1), g.aud_in_lnorm(a)], dim=1)
        return self.off_head(g.ln_f(g.blocks(x))[:, 0])


# -- the reranker ----------------------------------------------------------------------------------


def window_starts(seconds: float, window_seconds: float) -> list[int]:
    """The first visual step of each window :meth:`SparseSync.score` reads in ``seconds`` of
    audio (:func:`~v2a_plugins.rerankers.offset_scoring.window_starts`)."""
    return offset_windows(seconds, window_seconds, STEP_SECONDS)


class SparseSync(OffsetReranker):
    """SparseSync's offset classifier: a :class:`~v2a.interfaces.Reranker` (``score`` is
    ``-|offset|``) and a :class:`~v2a.interfaces.SyncClassifier` (``offsets``,
    ``offset_logits``)."""

    name = "sparsesync"
    step_seconds = STEP_SECONDS
    width_rule = "grid * grid * 1024"
    width_hint = "set grid to the encoder's crop / 32"

    def __init__(self, config: SparseSyncConfig | None = None):
        super().__init__()
        self.config = c = config or SparseSyncConfig()
        self.afeat_extractor = AudioResNet()
        self.v_bridge = holder(bridge=nn.Sequential(nn.Conv3d(S3D_DIM, c.width, 1), nn.GELU()))
        audio_shape = (halvings(N_FFT // 2 + 1), halvings(c.window_samples // HOP + 1))
        self.transformer = SyncTransformer(
            dim=c.width, depth=c.depth, heads=c.heads, selectors=c.selectors,
            visual_shape=(c.visual_steps, c.grid, c.grid), audio_shape=audio_shape,
        )
        if not is_random(c.weights):
            self.load_official(c.weights)
        self.requires_grad_(False)  # inference only
        self.sample_rate = SAMPLE_RATE
        self.window_seconds = c.window_seconds  # what one offset prediction reads
        self.video_streams = {c.video_stream: c.grid * c.grid * S3D_DIM}
        self.offsets: Sequence[float] = tuple(
            round(-MAX_OFFSET + i * 2 * MAX_OFFSET / (NUM_OFFSETS - 1), 6) for i in range(NUM_OFFSETS)
        )
        self.eval()

    def load_official(self, weights: str) -> None:
        """Load the audio tower, visual bridge and transformer of an official checkpoint."""
        path = sparsesync_file(weights, "the sparsesync reranker")
        state = load_checkpoint(path)
        for key in ("model", "state_dict"):
            if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
                state = state[key]
        if not isinstance(state, Mapping):
            raise WeightsError(f"{path} holds no state dict, so it is not a SparseSync checkpoint.")
        parts = ("afeat_extractor.", "v_bridge.", "transformer.")
        state = {k.removeprefix("module."): v for k, v in state.items()
                 if isinstance(k, str) and isinstance(v, Tensor)}
        state = {k: v for k, v in state.items() if k.startswith(parts)}
        if not state:
            raise WeightsError(f"{path} has no afeat_extractor./v_bridge./transformer. entries, so "
                               "it is not a SparseSync checkpoint; give the official one.")
        load_into(self, state, path, "the sparsesync reranker (audio tower, bridge, transformer)")

    # -- inputs -----------------------------------------------------------------------------------
    def window_inputs(self, audio: Tensor, video: FeatureSequence, window: int) -> tuple[Tensor, Tensor]:
        """The window starting ``window`` steps after the stream's first: S3D maps
        ``[b, 1024, t, grid, grid]`` and the waveform ``[b, window_samples]``."""
        c = self.config
        first = video.start + window * STEP_SECONDS
        grid = video.resample(1 / STEP_SECONDS, c.visual_steps, first)
        values = grid.values.masked_fill(~grid.valid_mask().unsqueeze(-1), 0.0)
        maps = rearrange(values, "b t (h w d) -> b d t h w", h=c.grid, w=c.grid)
        begin = max(0, round((first - FIRST_CENTRE / FPS) * SAMPLE_RATE))
        wav = audio.mean(dim=1)[:, begin:begin + c.window_samples]
        return maps, F.pad(wav, (0, c.window_samples - wav.shape[1]))

    # -- SyncClassifier ---------------------------------------------------------------------------
    def offset_logits(self, audio: Tensor, video: Mapping[str, FeatureSequence], *,
                      window: int = 0) -> Tensor:
        """``audio: [b, c, n]`` at 16 kHz and the video streams → ``[b, 21]`` logits over
        :attr:`offsets`, for the window starting ``window`` steps after the stream's first."""
        maps, wav = self.window_inputs(audio, self.video_sequence(video), window)
        dtype = self.transformer.off_head.weight.dtype
        visual = rearrange(self.v_bridge.bridge(maps.to(dtype)), "b d t h w -> b t h w d")
        spec = log_spectrogram(wav.to(dtype)).unsqueeze(1)
        audio_maps = rearrange(self.afeat_extractor(spec), "b d f t -> b f t d")
        return self.transformer(visual, audio_maps).flip(-1)  # official order → v2a's sign
