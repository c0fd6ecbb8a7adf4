"""The MaskVAT fuser's network (the implementation behind the ``maskvat`` fuser of
:mod:`v2a_plugins.fusers.maskvat`, which documents it and holds its options): the stream
projections, the time embedding, the context encoder and :class:`MaskVATFuser`."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from v2a import ConditionFuser, Conditioning, FeatureSequence, TextFeatures
from v2a.errors import UserError
from v2a.weights import load_trained
from v2a_plugins.fusers.maskvat import MaskVATFuserConfig

#: Periods (seconds) of the sinusoidal time embedding, geometrically spaced between these two.
MIN_PERIOD, MAX_PERIOD = 0.04, 10_000.0


# -- helpers ------------------------------------------------------------------------------------


def mlp(width: int, dim: int, dropout: float) -> nn.Sequential:
    """The projection of one input to ``dim``: linear, GELU, dropout, linear."""
    return nn.Sequential(nn.Linear(width, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))


def time_embedding(times: Tensor, dim: int) -> Tensor:
    """``times: [t]`` seconds → ``[t, dim]``: sines then cosines of periods from
    :data:`MIN_PERIOD` to :data:`MAX_PERIOD` s (a zero channel last when ``dim`` is odd)."""
    half = dim // 2
    periods = torch.logspace(
        math.log10(MIN_PERIOD), math.log10(MAX_PERIOD), max(half, 1), dtype=torch.float64
    )[:half]
    angles = 2 * math.pi * times.double()[:, None] / periods.to(times.device)  # [t, half]
    return F.pad(torch.cat([angles.sin(), angles.cos()], dim=-1), (0, dim - 2 * half))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention over valid steps, then an MLP."""

    def __init__(self, *, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim),
        )
        self.branch_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, keys: Tensor) -> Tensor:
        """``x: [b, s, dim]``, ``keys: [b, 1, 1, s]`` bool (the steps attended to)."""
        q, k, v = rearrange(
            self.qkv(self.attn_norm(x)), "b s (three h d) -> three b h s d", three=3, h=self.heads
        )
        p = self.dropout if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=keys, dropout_p=p)
        x = x + self.branch_dropout(self.attn_out(rearrange(h, "b h s d -> b s (h d)")))
        return x + self.branch_dropout(self.mlp(self.mlp_norm(x)))


# -- fuser --------------------------------------------------------------------------------------


class MaskVATFuser(ConditionFuser):
    """Projects, aligns and encodes MaskVAT's visual streams (see the module doc)."""

    def __init__(self, config: MaskVATFuserConfig):
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.provides_aligned, self.provides_context = config.aligned, config.context
        self.stream_dims = dict(config.streams)
        dim = config.dim
        self.project = nn.ModuleDict({
            name: mlp(width, dim, config.dropout) for name, width in config.streams.items()
        })
        self.accepts_text = config.text_dim is not None
        self.text_dim, self.text_pooled_dim = config.text_dim, config.text_pooled_dim
        if self.accepts_text:  # only then: the weights of a fuser without text stay as they were
            self.text_project = mlp(config.text_dim, dim, config.dropout)
            self.pooled_project = mlp(config.text_pooled_dim, dim, config.dropout)
            self.null_video = nn.Parameter(torch.randn(dim) * 0.02)
            if config.context:
                self.text_embedding = nn.Parameter(torch.randn(dim) * 0.02)
                self.null_video_token = nn.Parameter(torch.randn(dim) * 0.02)
        if config.aligned:
            self.aligned_norm = nn.LayerNorm(dim)
        if config.context:
            self.stream_embedding = nn.Parameter(torch.randn(len(config.streams), dim) * 0.02)
            self.encoder = nn.ModuleList(
                EncoderLayer(dim=dim, heads=config.heads, dropout=config.dropout)
                for _ in range(config.context_layers)
            )
            self.context_norm = nn.LayerNorm(dim)
        load_trained(self, config.weights, what="the maskvat fuser")

    def fuse(
        self,
        streams: Mapping[str, FeatureSequence],
        *,
        frame_rate: float,
        num_frames: int,
        text: TextFeatures | None = None,
        drop_video: Tensor | None = None,
        drop_text: Tensor | None = None,
    ) -> Conditioning:
        if not self.accepts_text and any(x is not None for x in (text, drop_video, drop_text)):
            raise ValueError("this maskvat fuser has no text_dim: it takes no text nor drop masks")
        batch = self._batch_size(streams, text, drop_video)
        dropped = None if batch is None else self._dropped(drop_video, batch, streams)
        projected = {} if dropped is not None and not streams else self._projected(streams, dropped)
        keep_text = None
        if text is not None:
            keep_text = torch.ones(text.batch_size, dtype=torch.bool, device=text.pooled.device)
            if drop_text is not None:
                keep_text = keep_text & ~drop_text.to(keep_text.device).bool()
        aligned = context = None
        if self.provides_aligned:
            aligned = self._aligned(projected, frame_rate, num_frames, dropped=dropped,
                                    text=text, keep_text=keep_text, batch=batch)
        if self.provides_context:
            context = self._context(projected, dropped=dropped, text=text, keep_text=keep_text,
                                    batch=batch)
        return Conditioning(aligned=aligned, context=context)

    def _batch_size(self, streams, text, drop_video) -> int | None:
        """The batch size of a fuser that accepts text (``None`` for one that does not)."""
        if not self.accepts_text:
            return None
        for seq in streams.values():
            return seq.batch_size
        if drop_video is not None:
            return int(drop_video.shape[0])
        if text is not None:
            return text.batch_size
        raise UserError("fuser maskvat got no visual stream and no text: give it the video's "
                        "streams, a prompt, or both")

    def _dropped(self, drop_video: Tensor | None, batch: int, streams) -> Tensor:
        """``[batch]`` bool: the rows fused from the null video (all of them without streams)."""
        device = self.null_video.device
        if not streams:
            if drop_video is not None and not bool(drop_video.all()):
                raise UserError("fuser maskvat got no visual stream but some rows keep their "
                                "video; give it the streams or drop every row's video")
            return torch.ones(batch, dtype=torch.bool, device=device)
        if drop_video is None:
            return torch.zeros(batch, dtype=torch.bool, device=device)
        return drop_video.to(device).bool()

    def _projected(self, streams, dropped: Tensor | None) -> dict[str, FeatureSequence]:
        """Each stream the fuser reads, projected to ``dim``, with padded steps (and, in rows of
        ``dropped``, every step) masked out and zero."""
        projected = {}  # name -> FeatureSequence [b, t, dim] (padded steps: zero in, zero out)
        for name, width in self.stream_dims.items():
            seq = streams.get(name)
            if seq is None:
                given = ", ".join(streams) or "none"
                raise UserError(
                    f"fuser maskvat needs the visual stream {name!r} (its `streams` option), "
                    f"but the streams given are: {given}"
                )
            if seq.dim != width:
                raise UserError(
                    f"fuser maskvat expects stream {name!r} to be {width} wide but it is "
                    f"{seq.dim}; set streams.{name}: {seq.dim} in the fuser's options"
                )
            if dropped is not None and bool(dropped.any()):
                seq = seq.replace(mask=seq.valid_mask() & ~dropped.to(seq.values.device)[:, None])
            values = seq.values
            if seq.mask is not None:
                values = values.masked_fill(~seq.mask[..., None], 0.0)
            values = self.project[name](values)
            if seq.mask is not None:
                values = values.masked_fill(~seq.mask[..., None], 0.0)
            projected[name] = seq.replace(values=values)
        return projected

    def _aligned(
        self, projected: dict[str, FeatureSequence], frame_rate: float, num_frames: int, *,
        dropped: Tensor | None, text: TextFeatures | None, keep_text: Tensor | None,
        batch: int | None,
    ) -> FeatureSequence:
        total, masks = 0.0, []
        for seq in projected.values():
            resampled = seq.resample(frame_rate, num_frames, start=0.0)  # [b, num_frames, dim]
            values, mask = resampled.values, resampled.mask
            if mask is not None:
                mask = mask & seq.mask.any(dim=1, keepdim=True)  # a row without video covers nothing
                values = values.masked_fill(~mask[..., None], 0.0)
            total = total + values
            masks.append(mask)
        covered = None  # [b, num_frames]: the frames at least one stream reaches
        if masks and all(m is not None for m in masks):
            covered = torch.stack(masks).any(dim=0)
        if dropped is not None:  # a fuser with text: null video in the dropped rows
            null = self.null_video.expand(batch, num_frames, -1)
            total = null if not projected else torch.where(dropped[:, None, None], null, total)
            if covered is not None:
                covered = covered | dropped[:, None]
            if text is not None:
                pooled = self.pooled_project(text.pooled.to(null.dtype))  # [b, dim]
                total = total + torch.where(keep_text[:, None], pooled, 0.0)[:, None]
        return FeatureSequence(
            values=self.aligned_norm(total), rate=frame_rate, start=0.0, mask=covered
        )

    def _context(
        self, projected: dict[str, FeatureSequence], *, dropped: Tensor | None,
        text: TextFeatures | None, keep_text: Tensor | None, batch: int | None,
    ) -> FeatureSequence:
        parts, masks = [], []
        if dropped is not None:  # a fuser with text: the null video token leads
            parts.append(self.null_video_token.expand(batch, 1, -1))
            masks.append(dropped[:, None])
        for i, seq in enumerate(projected.values()):
            times = seq.times().to(seq.values.device)  # [t] seconds
            tags = self.stream_embedding[i] + time_embedding(times, self.dim).to(seq.values.dtype)
            parts.append(seq.values + tags)  # [b, t, dim]
            masks.append(seq.valid_mask())
        if text is not None:
            real = text.tokens.valid_mask() & keep_text[:, None]  # [b, t]
            tokens = text.tokens.values.masked_fill(~real[..., None], 0.0)
            tokens = self.text_project(tokens.to(self.null_video.dtype))
            parts.append(tokens.masked_fill(~real[..., None], 0.0) + self.text_embedding)
            masks.append(real)
        x, valid = torch.cat(parts, dim=1), torch.cat(masks, dim=1)  # [b, s, dim], [b, s]
        # A row without any valid step attends to all of them (its output is all padding anyway).
        keys = valid | ~valid.any(dim=1, keepdim=True)
        keys = rearrange(keys, "b s -> b 1 1 s")
        for layer in self.encoder:
            x = layer(x, keys)
        seqs = list(projected.values())
        has_mask = dropped is not None or any(seq.mask is not None for seq in seqs)
        return FeatureSequence(
            values=self.context_norm(x),
            rate=sum(s.rate for s in seqs) or 1.0,  # nominal: context steps per second of video
            start=min((s.start for s in seqs), default=0.0),
            mask=valid if has_mask else None,
        )
