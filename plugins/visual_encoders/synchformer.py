"""Synchformer's visual tower as a v2a :class:`~v2a.interfaces.VisualEncoder` (plug-in
``synchformer``).

Synchformer (Iashin, Xie, Rahtu, Zisserman 2024, "Synchformer: Efficient Synchronization from
Sparse Cues") cuts a 4.8 s window of 25 fps video into 14 overlapping *segments* of 16 frames
(0.64 s) every 8 frames (0.32 s), encodes each segment with a Motionformer-style video ViT and
squeezes each segment's tokens into a few vectors. Written here from the paper and the public
description of its official implementation (v-iashin/Synchformer); no code is taken from it.

* **Tower** (per segment): a tubelet embedding (a 3D convolution of kernel and stride
  ``(2, 16, 16)``: 16 frames of 224² give 8 x 14 x 14 tokens), a CLS token, a spatial position
  embedding shared by all time steps plus a temporal one (Motionformer's "separate" embedding),
  ``depth`` divided space-time blocks (pre-LN; temporal attention among the tokens of one
  spatial position, then spatial attention among the tokens of one time step, the CLS token
  attending to everything and serving as an extra key in both; then an MLP), a final LayerNorm.
  The spatial tokens of each of the 8 time steps are then aggregated by one pre-LN transformer
  encoder layer with its own CLS token (whose output is kept): a segment becomes 8 vectors of
  ``width``. Synchformer's paper configuration uses "divided" attention (its default Motionformer
  config); trajectory attention (also in Motionformer) is not implemented.
* **Output**: one step per segment at ``rate = fps / 8`` (3.125 Hz at 25 fps): the segment's 8
  vectors concatenated in time order, ``dim = 8 * width`` (6144 at the real size), so that the
  ``synchformer`` reranker can split them back into tokens. Step ``n`` covers frames
  ``8n … 8n + 15`` and describes their centre, ``times[0] + (8n + 7.5) / fps``. ``t >= 16``
  frames give ``(t - 16) // 8 + 1`` segments (a 4.8 s window of 120 frames gives 14; up to 7
  trailing frames that do not fill a segment are not encoded); fewer than 16 frames are padded to
  16 by repeating the last frame, giving one segment.
* **Input**: frames in [0, 1] are normalised with mean 0.5 and std 0.5 (Synchformer's
  Motionformer normalisation). Frames of another size than ``image_size`` are resized (shortest
  side) and centre-cropped; the official pipeline resizes to 256 and centre-crops 224, which
  ``v2a.media`` does not reproduce exactly (*assumed* close enough).
* **Weights** (``weights``): ``"none"`` (random initialisation), or a local file holding the
  official Synchformer checkpoint (``{"model": state_dict}``, also bare or under
  ``"state_dict"``), whose ``vfeat_extractor.`` entries are loaded. The key names are
  *inferred* from the official source (not checked against a downloaded file): ``patch_embed_3d.
  proj``, ``cls_token``, ``pos_embed [1, 197, 768]``, ``temp_embed [1, 8, 768]``,
  ``blocks.{i}.{norm1,norm2,norm3,attn.qkv,attn.proj,timeattn.qkv,timeattn.proj,mlp.fc1,
  mlp.fc2}``, ``norm``, and ``spatial_attn_agg.{cls_token,self_attn.in_proj_*,self_attn.
  out_proj,linear1,linear2,norm1,norm2}`` (a ``torch.nn.TransformerEncoderLayer``). The unused
  2D ``patch_embed.`` entries are ignored. ``"pretrained"`` is refused: nothing is downloaded;
  the checkpoints are linked from the official repository's README.
  Position embeddings are not interpolated: ``image_size`` must match the checkpoint (224).
* **Frozen**: no parameter requires grad; a frozen feature extractor, as in Synchformer's
  second stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from v2a import ComponentSpec, FeatureSequence, VisualEncoder, hookimpl
from v2a.errors import UserError
from v2a.pretrained import nothing_to_download
from v2a.sequences import first_frame_time
from v2a.weights import PRETRAINED, WeightsError, is_random, load_checkpoint, load_into, local_file
from v2a_plugins.visual_encoders.s3d import resize_and_crop

#: Frames per segment, frames between segment starts, frames per tubelet (Synchformer's).
SEGMENT_FRAMES = 16
SEGMENT_STEP = 8
TUBELET = 2
#: Motionformer's input normalisation (per channel).
MEAN, STD = 0.5, 0.5
#: Where the official checkpoint keeps each part.
VISUAL_PREFIX = "vfeat_extractor."
PRETRAINED_HINT = (
    "Synchformer checkpoints are not downloaded here: get one from the links in the README of "
    "github.com/v-iashin/Synchformer and give its path as the weights option."
)


@dataclass
class SynchformerVisualConfig:
    """Options of the ``synchformer`` visual encoder (defaults: the real sizes).

    ``weights``: ``"none"`` or the path of an official Synchformer checkpoint. ``fps``: the
    frame rate of the input (25). ``image_size`` / ``patch_size``: the square frames and patches
    (224 / 16). ``width`` / ``depth`` / ``heads``: the ViT (768 / 12 / 12); ``mlp_ratio``: the
    MLP's hidden width over ``width`` (4).
    """

    weights: str = "none"
    """none (random) or the path of an official Synchformer checkpoint"""
    fps: float = 25.0
    """frame rate of the input"""
    image_size: int = 224
    """side of the square frames"""
    patch_size: int = 16
    """side of the square patches (must divide image_size)"""
    width: int = 768
    """ViT width"""
    depth: int = 12
    """ViT blocks"""
    heads: int = 12
    """ViT attention heads (must divide width)"""
    mlp_ratio: int = 4
    """MLP hidden width over width"""

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise UserError(f"the synchformer encoder's fps must be positive, got {self.fps}.")
        if self.image_size % self.patch_size:
            raise UserError(
                f"the synchformer encoder's image_size ({self.image_size}) must be a multiple of "
                f"its patch_size ({self.patch_size})."
            )
        if self.width % self.heads:
            raise UserError(
                f"the synchformer encoder's width ({self.width}) must be a multiple of its heads "
                f"({self.heads})."
            )


#: Vectors per segment: one per tubelet time step.
TOKENS_PER_SEGMENT = SEGMENT_FRAMES // TUBELET


def synchformer_visual_properties(config: SynchformerVisualConfig) -> dict:
    """The encoder's attributes, known without building it (``ComponentSpec.properties``)."""
    return {"fps": float(config.fps), "rate": config.fps / SEGMENT_STEP,
            "frame_size": (config.image_size, config.image_size),
            "dim": TOKENS_PER_SEGMENT * config.width}


# -- segment bookkeeping ---------------------------------------------------------------------------


def num_segments(num_frames: int) -> int:
    """Segments of 16 frames every 8 frames in ``num_frames`` frames (at least one: a shorter
    clip is padded to 16 frames)."""
    return (max(num_frames, SEGMENT_FRAMES) - SEGMENT_FRAMES) // SEGMENT_STEP + 1


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


def synchformer_file(weights: str, what: str):
    """The checkpoint file ``weights`` names, read safely (refusing ``pretrained``)."""
    if weights.strip().lower() == PRETRAINED:
        raise WeightsError(f"{what} is not downloaded by v2a. {PRETRAINED_HINT}")
    path = local_file(weights, what=what, hint=PRETRAINED_HINT)
    return path, load_checkpoint(path)


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


def synchformer_pretrained_files(config) -> list:
    """Nothing to download (see ``ComponentSpec.pretrained_files``): no library publishes
    these weights; ``weights: pretrained`` is refused as building refuses it.
    (The visual tower and the reranker read the same file.)"""
    return nothing_to_download(config.weights,
                               lambda weights: synchformer_file(weights, "Synchformer"))


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="visual_encoder", name="synchformer", build=SynchformerVisualEncoder,
        config=SynchformerVisualConfig, properties=synchformer_visual_properties,
        pretrained_files=synchformer_pretrained_files,
        description="Synchformer's Motionformer tower: 8 vectors per 0.64 s segment, fps / 8",
    ))
