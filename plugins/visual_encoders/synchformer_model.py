"""The ``synchformer`` visual encoder's implementation: the Motionformer tower, its checkpoint
reading and :class:`SynchformerVisualEncoder` (torch).

The plug-in's documentation, options and registration are in
:mod:`v2a_plugins.visual_encoders.synchformer`, which imports this module the first time an
encoder is built; the ``synchformer`` reranker builds on the tower and checkpoint reading here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from v2a import FeatureSequence, VisualEncoder
from v2a.sequences import first_frame_time
from v2a.weights import WeightsError, is_random, load_into
from v2a_plugins.visual_encoders.s3d_model import resize_and_crop
from v2a_plugins.visual_encoders.synchformer import (MEAN, SEGMENT_FRAMES, SEGMENT_STEP, STD,
                                                     TOKENS_PER_SEGMENT, TUBELET, VISUAL_PREFIX,
                                                     SynchformerVisualConfig, synchformer_file)

# -- segment bookkeeping ---------------------------------------------------------------------------


def segment_times(count: int, fps: float, first: float = 0.0) -> Tensor:
    """``[count, 2]`` float64: the start and end (s) of each segment, the first frame at
    ``first``; a segment ends where the frame after its last one would start."""
    starts = first + torch.arange(count, dtype=torch.float64) * SEGMENT_STEP / fps
    return torch.stack([starts, starts + SEGMENT_FRAMES / fps], dim=1)


def split_segments(frames: Tensor) -> Tensor:
    """``frames: [b, t, c, h, w]`` → ``[b, s, c, 16, h, w]`` (clips shorter than 16 frames are
    padded by repeating their last frame)."""
    t = frames.shape[1]
    if t < SEGMENT_FRAMES:
        frames = torch.cat([frames, frames[:, -1:].expand(-1, SEGMENT_FRAMES - t, -1, -1, -1)], 1)
    segments = frames.unfold(1, SEGMENT_FRAMES, SEGMENT_STEP)  # [b, s, c, h, w, 16]
    return rearrange(segments, "b s c h w f -> b s c f h w")


# -- checkpoints -----------------------------------------------------------------------------------


def checkpoint_part(checkpoint, path, prefix: str, *, drop: tuple[str, ...] = ()) -> dict:
    """The tensors under ``prefix`` in an official Synchformer checkpoint (``{"model": …}``,
    ``{"state_dict": …}`` or bare; a DDP ``module.`` prefix is removed), without ``prefix``
    and without the entries starting with any of ``drop``."""
    state = checkpoint
    for key in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds no state dict, so it is not a Synchformer checkpoint.")
    out = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            continue
        key = key.removeprefix("module.")
        if key.startswith(prefix) and not key[len(prefix):].startswith(drop):
            out[key[len(prefix):]] = value
    if not out:
        raise WeightsError(
            f"{path} has no {prefix!r} entries, so it is not a Synchformer checkpoint; give the "
            "official checkpoint (its 'model' state dict)."
        )
    return out


# -- the tower -------------------------------------------------------------------------------------


class Mlp(nn.Module):
    """Linear, GELU, linear (the ViT MLP)."""

    def __init__(self, *, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DividedAttention(nn.Module):
    """Attention within groups of tokens: over time (the tokens of one spatial position) or over
    space (the tokens of one time step). Token 0 is the CLS token: its query attends to every
    token, and its key and value join every group."""

    def __init__(self, *, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, *, steps: int, over: str) -> Tensor:
        """``x: [b, 1 + steps * places, dim]`` (time-major tokens) → same shape."""
        b = x.shape[0]
        q, k, v = rearrange(self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.heads)
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)
        group = "(b p) h f e" if over == "time" else "(b f) h p e"
        pattern = f"b h (f p) e -> {group}"
        qg, kg, vg = (rearrange(t[:, :, 1:], pattern, f=steps) for t in (q, k, v))
        repeats = qg.shape[0] // b
        kg = torch.cat([k[:, :, :1].repeat_interleave(repeats, dim=0), kg], dim=2)
        vg = torch.cat([v[:, :, :1].repeat_interleave(repeats, dim=0), vg], dim=2)
        out = rearrange(F.scaled_dot_product_attention(qg, kg, vg), f"{group} -> b h (f p) e", b=b)
        out = torch.cat([cls_out, out], dim=2)
        return self.proj(rearrange(out, "b h n e -> b n (h e)"))


class DividedSpaceTimeBlock(nn.Module):
    """Temporal attention, spatial attention and an MLP, each pre-LN with a residual."""

    def __init__(self, *, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)  # before the temporal attention
        self.timeattn = DividedAttention(dim=dim, heads=heads)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # before the spatial attention
        self.attn = DividedAttention(dim=dim, heads=heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim=dim, hidden=mlp_ratio * dim)

    def forward(self, x: Tensor, *, steps: int) -> Tensor:
        x = x + self.timeattn(self.norm3(x), steps=steps, over="time")
        x = x + self.attn(self.norm1(x), steps=steps, over="space")
        return x + self.mlp(self.norm2(x))


class CLSAggregator(nn.Module):
    """One pre-LN transformer encoder layer over ``[n, tokens, dim]`` with a CLS token
    prepended; returns the CLS token's output ``[n, dim]`` (Synchformer's aggregation of a time
    step's spatial tokens, and of a segment's frequency tokens in the audio tower)."""

    def __init__(self, *, dim: int, heads: int, hidden: int):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=hidden, dropout=0.0, activation=nn.GELU(),
            layer_norm_eps=1e-6, batch_first=True, norm_first=True,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.layer(x)[:, 0]

    def load_layout(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The official flat layout (``cls_token``, ``self_attn.…``, ``linear1.…``) as this
        module's keys (``layer.`` in front of the layer's entries)."""
        return {k if k == "cls_token" else f"layer.{k}": v for k, v in state.items()}


class MotionformerTower(nn.Module):
    """Segments ``[n, 3, 16, h, w]`` (normalised) → ``[n, 8, width]``."""

    def __init__(self, config: SynchformerVisualConfig):
        super().__init__()
        c = config
        side = c.image_size // c.patch_size
        self.places = side * side
        kernel = (TUBELET, c.patch_size, c.patch_size)
        self.patch_embed_3d = nn.Conv3d(3, c.width, kernel_size=kernel, stride=kernel)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.places + 1, c.width))
        self.temp_embed = nn.Parameter(torch.zeros(1, TOKENS_PER_SEGMENT, c.width))
        self.blocks = nn.ModuleList(
            DividedSpaceTimeBlock(dim=c.width, heads=c.heads, mlp_ratio=c.mlp_ratio)
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.width, eps=1e-6)
        self.spatial_attn_agg = CLSAggregator(dim=c.width, heads=c.heads, hidden=c.mlp_ratio * c.width)
        for p in (self.cls_token, self.pos_embed, self.temp_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, segments: Tensor) -> Tensor:
        x = self.patch_embed_3d(segments)  # [n, width, 8, side, side]
        n, steps = x.shape[0], x.shape[2]
        x = rearrange(x, "n d f h w -> n (f h w) d")
        position = self.pos_embed[:, 1:].repeat(1, steps, 1)
        position = position + self.temp_embed[:, :steps].repeat_interleave(self.places, dim=1)
        x = torch.cat([self.cls_token.expand(n, -1, -1) + self.pos_embed[:, :1], x + position], 1)
        for block in self.blocks:
            x = block(x, steps=steps)
        x = self.norm(x[:, 1:])
        x = rearrange(x, "n (f p) d -> (n f) p d", f=steps)
        return rearrange(self.spatial_attn_agg(x), "(n f) d -> n f d", n=n)

    def load_official(self, state: Mapping[str, Tensor], path) -> None:
        """Load the ``vfeat_extractor.`` part of an official checkpoint (prefix removed)."""
        agg = "spatial_attn_agg."
        own = {k: v for k, v in state.items() if not k.startswith(agg)}
        own = {k.replace("patch_embed_3d.proj.", "patch_embed_3d."): v for k, v in own.items()}
        inner = {k[len(agg):]: v for k, v in state.items() if k.startswith(agg)}
        own.update({agg + k: v for k, v in self.spatial_attn_agg.load_layout(inner).items()})
        load_into(self, own, path, "Synchformer's visual tower")


# -- the encoder -----------------------------------------------------------------------------------


class SynchformerVisualEncoder(VisualEncoder):
    """Synchformer's visual tower behind the :class:`~v2a.interfaces.VisualEncoder` contract.

    ``encode``: frames ``[b, t, 3, h, w]`` in [0, 1] at ``fps``, ``times: [t]`` →
    ``[b, num_segments(t), 8 * width]`` at ``fps / 8`` from ``times[0] + 7.5 / fps``.
    """

    def __init__(self, config: SynchformerVisualConfig | None = None):
        super().__init__()
        self.config = config = config or SynchformerVisualConfig()
        self.tower = MotionformerTower(config)
        if not is_random(config.weights):
            path, checkpoint = synchformer_file(config.weights, "the synchformer visual encoder")
            state = checkpoint_part(checkpoint, path, VISUAL_PREFIX, drop=("patch_embed.",))
            self.tower.load_official(state, path)
        self.tower.requires_grad_(False)  # a frozen feature extractor
        self.fps = float(config.fps)
        self.rate = self.fps / SEGMENT_STEP
        self.frame_size = (config.image_size, config.image_size)
        self.dim = TOKENS_PER_SEGMENT * config.width
        self.eval()

    def encode(self, frames: Tensor, times: Tensor) -> FeatureSequence:
        """``frames: [b, t, 3, h, w]``, ``times: [t]`` s → ``[b, s, 8 * width]`` at ``fps / 8``."""
        b, t = frames.shape[:2]
        start = first_frame_time(times, t) + (SEGMENT_FRAMES - 1) / 2 / self.fps
        dtype = self.tower.pos_embed.dtype
        images = rearrange(frames.to(dtype), "b t c h w -> (b t) c h w")
        images = (resize_and_crop(images, self.config.image_size) - MEAN) / STD
        segments = split_segments(rearrange(images, "(b t) c h w -> b t c h w", b=b))
        tokens = self.tower(rearrange(segments, "b s c f h w -> (b s) c f h w"))
        values = rearrange(tokens, "(b s) k d -> b s (k d)", b=b)
        return FeatureSequence(values=values, rate=self.rate, start=start)
