"""The ``imagebind`` visual encoder's implementation: ImageBind's transformer parts (shared with
the ``imagebind`` audio encoder), its checkpoint reading and :class:`ImageBindVisionEncoder`
(torch).

The plug-in's documentation, options and registration are in
:mod:`v2a_plugins.visual_encoders.imagebind`, which imports this module the first time an
encoder is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from v2a import FeatureSequence, VisualEncoder
from v2a.errors import UserError
from v2a.weights import WeightsError, downloaded_file, is_random, load_checkpoint, load_into
from v2a_plugins.visual_encoders.imagebind import (CHECKPOINT_TEXT, CHECKPOINT_URL, IMAGE_MEAN,
                                                   IMAGE_STD, MODULE_GROUPS, TRUNK_EPS,
                                                   ImageBindVisionConfig, vision_text)
from v2a_plugins.visual_encoders.synchformer_model import Mlp  # fc1, exact GELU, fc2 (ViT's)

# -- shared transformer parts --------------------------------------------------------------------


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(norm_1(x))``, then ``x + mlp(norm_2(x))``.

    ``attn`` is :class:`torch.nn.MultiheadAttention` (its parameter names are the checkpoint's);
    ``bias_kv`` adds its learnt key and value token (``add_bias_kv``, the audio trunk's).
    """

    def __init__(self, *, dim: int, heads: int, bias_kv: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=bias_kv, batch_first=True)
        self.norm_1 = nn.LayerNorm(dim, eps=TRUNK_EPS)
        self.mlp = Mlp(dim=dim, hidden=4 * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=TRUNK_EPS)

    def forward(self, x: Tensor) -> Tensor:  # [n, s, d]
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    """An optional LayerNorm (``pre_transformer_layer.0``), then ``depth`` blocks."""

    def __init__(self, *, dim: int, depth: int, heads: int, bias_kv: bool, pre_norm: bool):
        super().__init__()
        assert dim % heads == 0, "the configuration checks that heads divide the width"
        if pre_norm:
            self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=TRUNK_EPS))
        self.pre_norm = pre_norm
        self.blocks = nn.ModuleList(
            [Block(dim=dim, heads=heads, bias_kv=bias_kv) for _ in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        if self.pre_norm:
            x = self.pre_transformer_layer(x)
        for block in self.blocks:
            x = block(x)
        return x


class PositionTable(nn.Module):
    """The learnt positional embedding ``pos_embed [1, positions, dim]``."""

    def __init__(self, *, positions: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, positions, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)


class Stem(nn.Module):
    """Patch projection ``proj`` (a convolution, or a sequence ending in one) and an optional
    LayerNorm ``norm_layer`` over the flattened patches: ``[n, c, ...]`` → ``[n, patches, dim]``."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None):
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class Preprocessor(nn.Module):
    """Stem, a learnt cls token in front, learnt positions added: ``[n, ...]`` → ``[n, 1 + p, d]``."""

    def __init__(self, *, stem: Stem, patches: int, dim: int):
        super().__init__()
        self.rgbt_stem = stem
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.pos_embedding_helper = PositionTable(positions=1 + patches, dim=dim)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.rgbt_stem(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embedding_helper.pos_embed


class FirstToken(nn.Module):
    """``[n, s, d]`` → ``[n, d]``: the cls token."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0]


def head(*, dim: int, out_dim: int) -> nn.Sequential:
    """LayerNorm, the cls token, Linear without bias (keys ``0.*``, ``2.weight``)."""
    return nn.Sequential(nn.LayerNorm(dim, eps=TRUNK_EPS), FirstToken(),
                         nn.Linear(dim, out_dim, bias=False))


def attach_tower(owner: nn.Module, *, modality: str, preprocessor: Preprocessor, trunk: Trunk,
                 head: nn.Module, postprocessor: nn.Module | None = None) -> None:
    """Give ``owner`` one modality of ImageBind under the checkpoint's names: its preprocessor,
    trunk, head (and postprocessor, when it has parameters) as ``modality_<part>.<modality>``,
    so that ``owner.state_dict()`` has the released key layout."""
    owner.modality_preprocessors = nn.ModuleDict({modality: preprocessor})
    owner.modality_trunks = nn.ModuleDict({modality: trunk})
    owner.modality_heads = nn.ModuleDict({modality: head})
    if postprocessor is not None:
        owner.modality_postprocessors = nn.ModuleDict({modality: postprocessor})


def tower_head(owner: nn.Module, modality: str, x: Tensor) -> Tensor:
    """The head's output ``[n, out_dim]`` (before any normalisation) for the input ``x`` of the
    tower :func:`attach_tower` gave ``owner``."""
    tokens = owner.modality_trunks[modality](owner.modality_preprocessors[modality](x))
    return owner.modality_heads[modality](tokens)


def modality_state(weights: str, *, modality: str, what: str) -> tuple[Path, dict[str, Tensor]]:
    """The file a ``weights`` option names (``imagebind_huge.pth`` or a state dict of one tower)
    and its ``modality_*.<modality>.*`` tensors; a :class:`WeightsError` when it holds none."""
    path = downloaded_file(weights, model="ImageBind-Huge", file=CHECKPOINT_TEXT, page=CHECKPOINT_URL)
    loaded = load_checkpoint(path)
    if not isinstance(loaded, Mapping):
        raise WeightsError(f"{path} holds a {type(loaded).__name__}, not an ImageBind state dict.")
    prefixes = tuple(f"{group}.{modality}." for group in MODULE_GROUPS)
    state = {k: v for k, v in loaded.items()
             if isinstance(k, str) and k.startswith(prefixes) and isinstance(v, Tensor)}
    if not state:
        raise WeightsError(
            f"{path} holds no {what} weights (no key starting with modality_trunks.{modality}.), "
            f"so it is not an ImageBind checkpoint; download {CHECKPOINT_URL} and give its path."
        )
    return path, state


# -- the vision tower ----------------------------------------------------------------------------


class RepeatFrames(nn.Module):
    """An image ``[n, 3, h, w]`` (or a one-frame clip) → a clip of ``frames`` equal frames
    ``[n, 3, frames, h, w]``, as ImageBind feeds images to its video stem; a clip of more frames
    passes unchanged."""

    def __init__(self, frames: int = 2):
        super().__init__()
        self.frames = frames

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(2)
        return x.expand(-1, -1, self.frames, -1, -1) if x.shape[2] == 1 else x


def attach_vision_tower(owner: nn.Module, config: ImageBindVisionConfig) -> None:
    """ImageBind's vision preprocessor, trunk and head for ``config``, attached to ``owner``."""
    size, patch, width = config.image_size, config.patch_size, config.width
    conv = nn.Conv3d(3, width, kernel_size=(2, patch, patch), stride=(2, patch, patch), bias=False)
    stem = Stem(nn.Sequential(RepeatFrames(2), conv))
    attach_tower(
        owner, modality="vision",
        preprocessor=Preprocessor(stem=stem, patches=(size // patch) ** 2, dim=width),
        trunk=Trunk(dim=width, depth=config.depth, heads=config.heads, bias_kv=False, pre_norm=True),
        head=head(dim=width, out_dim=config.embed_dim),
    )


def resize_shortest(images: Tensor, size: int) -> Tensor:
    """``[n, 3, h, w]`` in [0, 1] with the shortest side resized to ``size`` (bicubic,
    antialiased, the other side truncated as torchvision's ``Resize``), clamped to [0, 1]."""
    h, w = images.shape[-2:]
    if min(h, w) == size:
        return images
    scale = size / min(h, w)
    new = (size, max(size, int(w * scale))) if h <= w else (max(size, int(h * scale)), size)
    out = F.interpolate(images, size=new, mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(0, 1)


def spatial_crops(images: Tensor, size: int, count: int) -> Tensor:
    """``[n, 3, h, w]`` (shortest side ``size``) → ``[count, n, 3, size, size]``: the centre crop
    (offset ``ceil((side - size) / 2)``), or the first, centre and last along the longer side."""
    h, w = images.shape[-2:]
    along_width = w >= h
    extent = w if along_width else h
    centre = math.ceil((extent - size) / 2)
    offsets = [centre] if count == 1 else [0, centre, extent - size]
    if along_width:
        top = math.ceil((h - size) / 2)
        return torch.stack([images[..., top:top + size, o:o + size] for o in offsets])
    left = math.ceil((w - size) / 2)
    return torch.stack([images[..., o:o + size, left:left + size] for o in offsets])


class ImageBindVisionEncoder(VisualEncoder):
    """ImageBind-Huge image embeddings: ``frames [b, t, 3, h, w]`` in [0, 1], ``times [t]`` →
    ``[b, t, embed_dim]`` unit embeddings at ``rate = fps`` from ``times[0]`` (``t - 1`` steps from
    the midpoint of the first two frames with ``frame_pairs``). Any frame size is accepted
    (resized here); ``frame_size`` is ``(image_size, image_size)`` with one crop, so callers may
    crop first, and ``None`` with three (they need the whole frame)."""

    def __init__(self, config: ImageBindVisionConfig | None = None):
        super().__init__()
        config = config or ImageBindVisionConfig()
        self.config = config
        attach_vision_tower(self, config)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(3, 1, 1), persistent=False)
        if not is_random(config.weights):
            path, state = modality_state(config.weights, modality="vision", what="ImageBind vision")
            load_into(self, state, path, f"the ImageBind vision tower {vision_text(config)}")
        self.requires_grad_(False)  # a frozen feature extractor
        self.fps = self.rate = float(config.fps)
        self.dim = config.embed_dim
        self.frame_size = (config.image_size, config.image_size) if config.crops == 1 else None
        self.eval()

    def clips(self, frames: Tensor) -> Tensor:
        """``[b, t, 3, h, w]`` → normalised crops ``[crops, b, s, 3, f, size, size]`` of ``s``
        steps of ``f`` frames (1, repeated in the stem; or 2 with ``frame_pairs``)."""
        b, t = frames.shape[:2]
        size = self.config.image_size
        images = resize_shortest(frames.flatten(0, 1).to(self.mean.dtype), size)
        crops = (spatial_crops(images, size, self.config.crops) - self.mean) / self.std
        crops = crops.unflatten(1, (b, t))  # [k, b, t, 3, size, size]
        if self.config.frame_pairs:
            return torch.stack([crops[:, :, :-1], crops[:, :, 1:]], dim=4)
        return crops.unsqueeze(4)

    def encode(self, frames: Tensor, times: Tensor) -> FeatureSequence:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"ImageBindVisionEncoder.encode expects frames [b, t, 3, h, w], got {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        if times.shape != (t,):
            raise ValueError(f"times has shape {tuple(times.shape)} for {t} frames; it must be [{t}]")
        if self.config.frame_pairs and t < 2:
            raise UserError(f"the ImageBind visual encoder with frame_pairs needs at least 2 frames, got {t}; "
                            "give a longer clip or set frame_pairs to false")
        clips = self.clips(frames)  # [k, b, s, 3, f, size, size]
        k, _, s = clips.shape[:3]
        flat = clips.flatten(0, 2)  # [k * b * s, 3, f, size, size]
        chunks = [F.normalize(tower_head(self, "vision", chunk), dim=-1)
                  for chunk in flat.split(self.config.batch_frames)]
        values = torch.cat(chunks).unflatten(0, (k, b, s)).mean(dim=0)  # [b, s, dim]
        start = float(times[0])
        if self.config.frame_pairs:
            start = (float(times[0]) + float(times[1])) / 2
        return FeatureSequence(values=values, rate=self.rate, start=start)
