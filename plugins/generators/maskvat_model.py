"""The MaskVAT generator's network (the implementation behind the plug-ins of
:mod:`v2a_plugins.generators.maskvat`, which documents it and holds its options): rotary and
sinusoidal positions, the two attention kernels and the per-process choice between them, the
transformer block and :class:`MaskVATGenerator`."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from v2a import Conditioning, FeatureSequence, MaskedGenerator
from v2a.errors import UserError
from v2a.weights import load_trained
from v2a_plugins.generators.maskvat import VARIANTS, MaskVATConfig, Variant


# -- helpers ------------------------------------------------------------------------------------


def rotary_table(length: int, head_dim: int, base: float = 10000.0) -> Tensor:
    """``[2, length, head_dim]``: cos and sin of the rotary angles of positions ``0..length-1``
    (channel pairs ``(i, i + head_dim / 2)`` share a frequency)."""
    freqs = base ** -(torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), freqs)  # [length, d / 2]
    angles = torch.cat([angles, angles], dim=-1)  # [length, d]
    return torch.stack([angles.cos(), angles.sin()]).float()


def sinusoids(length: int, width: int, base: float = 10000.0) -> Tensor:
    """``[length, width]`` sinusoidal embeddings of positions ``0..length-1`` (Vaswani et al.)."""
    freqs = base ** -(torch.arange(0, width, 2, dtype=torch.float64) / width)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), freqs)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)[:, :width].float()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding of ``x: [..., l, d]`` with ``cos, sin: [l, d]``."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def modulate(normed: Tensor, shift: Tensor, scale_plus_one: Tensor) -> Tensor:
    """AdaLN: ``normed * (1 + scale) + shift`` (``1 + scale`` precomputed in ``prepare``)."""
    return torch.addcmul(shift, normed, scale_plus_one)


def residual(x: Tensor, branch: Tensor, gate: Tensor | None) -> Tensor:
    """``x + gate * branch`` (or ``x + branch`` without a gate)."""
    return x + branch if gate is None else torch.addcmul(x, gate, branch)


def zero_(module: nn.Linear) -> nn.Linear:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


# -- attention kernels --------------------------------------------------------------------------

#: The written-out form computes its scores in pieces of at most this many elements (64 Mi
#: fp32), so that long sequences never hold the whole ``[b, h, l, s]`` score tensor.
SCORE_ELEMENTS = 1 << 24


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """``softmax(q kᵀ / √d) v`` in ``q``'s dtype: ``q: [b, h, l, d]``, ``k, v: [b, h, s, d]``,
    ``mask: [b, 1, 1, s]`` bool (True: attended; every row needs one) → ``[b, h, l, d]``.
    The queries go in chunks of :data:`SCORE_ELEMENTS` scores (each query row is independent)."""
    b, h, l, d = q.shape
    s = k.shape[-2]
    q = q * d**-0.5
    keys = k.transpose(-2, -1)
    hide = None if mask is None else ~mask
    rows = max(1, SCORE_ELEMENTS // (b * h * s))
    out = []
    for start in range(0, l, rows):
        scores = torch.matmul(q[:, :, start:start + rows], keys)
        if hide is not None:
            scores = scores.masked_fill_(hide, float("-inf"))
        out.append(torch.matmul(scores.softmax(dim=-1), v))
    return out[0] if len(out) == 1 else torch.cat(out, dim=2)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                   dropout: float = 0.0) -> Tensor:
    """:func:`explicit_attention` through ``scaled_dot_product_attention`` (with ``dropout``
    on the attention weights)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


#: ``choose_attention``'s measurements in this process: bucket → the faster path.
_MEASURED: dict[tuple, str] = {}


def choose_attention(setting: str, q: tuple[int, ...], keys: int, *, dtype: torch.dtype,
                     device: torch.device, masked: bool) -> str:
    """The path (``sdpa`` or ``explicit``) that attention of queries ``q = (b, h, l, d)`` over
    ``keys`` keys runs for ``setting`` (one of :data:`ATTENTION_SETTINGS`).

    ``auto``: SDPA off the CPU (its fused kernels); on a CPU the faster of the two, timed once
    per process and bucket ``(dtype, h, l, keys, d, masked)`` on random tensors of that shape
    (:func:`time_attention`) and kept (:func:`attention_choices`). Both paths compute the same
    product, so the choice changes results only by rounding."""
    if setting != "auto":
        return setting
    if device.type != "cpu":
        return "sdpa"
    b, h, l, d = q
    bucket = (str(dtype).removeprefix("torch."), h, l, keys, d, masked)
    if bucket not in _MEASURED:
        sdpa, explicit = time_attention(q, keys, dtype=dtype, masked=masked)
        # SDPA unless clearly slower: a near tie is not worth a result that depends on noise
        _MEASURED[bucket] = "explicit" if explicit < 0.9 * sdpa else "sdpa"
    return _MEASURED[bucket]


def time_attention(q: tuple[int, ...], keys: int, *, dtype: torch.dtype, masked: bool,
                   rounds: int = 3) -> tuple[float, float]:
    """Seconds of one SDPA and one written-out attention on a CPU (the best of ``rounds``,
    the two interleaved so that a busy spell slows both), after a warm-up call of each, on at
    most 2 of the ``b`` rows (the time is linear in rows; 2 rows of h heads keep the threads
    busy). The random inputs come from a private generator: torch's random stream is untouched."""
    b, h, l, d = q
    b = min(b, 2)
    rng = torch.Generator().manual_seed(0)
    qs = torch.randn(b, h, l, d, generator=rng).to(dtype)
    ks, vs = (torch.randn(b, h, keys, d, generator=rng).to(dtype) for _ in range(2))
    mask = None
    if masked:  # the first key always valid, like the generator's null token
        mask = (torch.rand(b, 1, 1, keys, generator=rng) < 0.7)
        mask[..., 0] = True
    best = {sdpa_attention: float("inf"), explicit_attention: float("inf")}
    with torch.no_grad():
        for repeat in range(rounds + 1):
            for path in best:
                start = time.perf_counter()
                path(qs, ks, vs, mask)
                if repeat:  # the first round warms up
                    best[path] = min(best[path], time.perf_counter() - start)
    return best[sdpa_attention], best[explicit_attention]


def attention_choices() -> dict[str, str]:
    """What ``auto`` chose in this process, by bucket (``"bfloat16 h8 l345 s345 d64"``)."""
    return {f"{dt} h{h} l{l} s{s} d{d}{' masked' if m else ''}": path
            for (dt, h, l, s, d, m), path in _MEASURED.items()}


# -- blocks -------------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm self-attention, optional cross-attention, MLP; AdaLN-modulated or not."""

    def __init__(
        self, *, width: int, heads: int, ffn_mult: float, dropout: float, modulated: bool,
        cross: bool,
    ):
        super().__init__()
        self.heads, self.dropout, self.modulated = heads, dropout, modulated
        # self-attention
        self.attn_norm = nn.LayerNorm(width, elementwise_affine=not modulated)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.attn_out = nn.Linear(width, width)
        # cross-attention to the context (keys and values are computed in prepare)
        self.cross_norm = nn.LayerNorm(width) if cross else None
        self.cross_q = nn.Linear(width, width, bias=False) if cross else None
        self.cross_kv = nn.Linear(width, 2 * width, bias=False) if cross else None
        self.cross_out = zero_(nn.Linear(width, width)) if cross else None
        # MLP
        hidden = max(1, round(ffn_mult * width))
        self.mlp_norm = nn.LayerNorm(width, elementwise_affine=not modulated)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, width),
        )
        self.branch_dropout = nn.Dropout(dropout)
        # AdaLN-Zero: per frame shift, scale, gate of both branches (used in prepare)
        self.adaln = (
            nn.Sequential(nn.SiLU(), zero_(nn.Linear(width, 6 * width))) if modulated else None
        )

    def modulations(self, cond: Tensor) -> Tensor:
        """``cond: [b, l, width]`` → ``[b, l, 6 * width]``: shift, 1 + scale, gate (attention),
        then the same for the MLP."""
        mod = rearrange(self.adaln(cond), "b l (six w) -> b l six w", six=6)
        one = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0], dtype=mod.dtype, device=mod.device)
        return rearrange(mod + one[:, None], "b l six w -> b l (six w)")

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, path: str) -> Tensor:
        """``q: [b, h, l, d]``, ``k, v: [b, h, s, d]``, ``mask: [b, 1, 1, s]`` → ``[b, l, h * d]``
        through ``path`` (``sdpa``, the only one with dropout, or ``explicit``)."""
        if path == "explicit":
            out = explicit_attention(q, k, v, mask)
        else:
            out = sdpa_attention(q, k, v, mask, self.dropout if self.training else 0.0)
        return rearrange(out, "b h l d -> b l (h d)")

    def forward(
        self,
        x: Tensor,  # [b, l, width]
        rotary: tuple[Tensor, Tensor],  # cos, sin: [l, width / heads]
        mod: Tensor | None,  # [b, l, 6, width]: shift, 1 + scale, gate (attn); same (mlp)
        kv: Tensor | None,  # [b, s, 2 * width]: cross-attention keys and values
        kv_mask: Tensor | None,  # [b, 1, 1, s] bool: valid keys
        paths: tuple[str, str] = ("sdpa", "sdpa"),  # attention paths: self, cross
    ) -> Tensor:
        # self-attention
        h = self.attn_norm(x)
        if mod is not None:
            h = modulate(h, mod[:, :, 0], mod[:, :, 1])
        qkv = rearrange(self.qkv(h), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        cos, sin = (t.to(qkv.dtype) for t in rotary)
        q, k = rotate(qkv[:2], cos, sin)  # queries and keys in one go
        h = self.attn_out(self.attend(q, k, qkv[2], None, paths[0]))
        x = residual(x, self.branch_dropout(h), None if mod is None else mod[:, :, 2])
        # cross-attention
        if self.cross_q is not None:
            q = rearrange(self.cross_q(self.cross_norm(x)), "b l (h d) -> b h l d", h=self.heads)
            k, v = rearrange(kv, "b s (two h d) -> two b h s d", two=2, h=self.heads)
            h = self.cross_out(self.attend(q, k.to(q.dtype), v.to(q.dtype), kv_mask, paths[1]))
            x = x + self.branch_dropout(h)
        # MLP
        h = self.mlp_norm(x)
        if mod is not None:
            h = modulate(h, mod[:, :, 3], mod[:, :, 4])
        return residual(x, self.branch_dropout(self.mlp(h)), None if mod is None else mod[:, :, 5])


# -- model --------------------------------------------------------------------------------------


class MaskVATGenerator(MaskedGenerator):
    """The MaskVAT transformer; ``variant`` picks the conditioning path (see the module doc)."""

    def __init__(self, config: MaskVATConfig, *, variant: Variant):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.config, self.variant = config, variant
        self.uses_aligned, self.uses_context = VARIANTS[variant]
        self.n_codebooks, self.codebook_size = config.n_codebooks, config.codebook_size
        self.condition_dim, self.hidden_dim = config.condition_dim, config.width
        k, vocab, w = config.n_codebooks, config.codebook_size, config.width

        # input: k stacked tables of vocab + 1 rows (the last row of each: [MASK])
        self.embed = nn.EmbeddingBag(k * (vocab + 1), w, mode="sum")
        nn.init.normal_(self.embed.weight, std=0.02)
        self.register_buffer("level_offset", torch.arange(k) * (vocab + 1), persistent=False)
        self.register_buffer(
            "rotary", rotary_table(config.max_frames, w // config.heads), persistent=False
        )
        self.register_buffer("positions", sinusoids(config.max_frames, w), persistent=False)

        # conditioning (used by prepare)
        if self.uses_aligned:
            self.aligned_proj = nn.Linear(config.condition_dim, w)
            self.null_aligned = nn.Parameter(torch.randn(w) * 0.02)
            self.final_adaln = nn.Sequential(nn.SiLU(), zero_(nn.Linear(w, 2 * w)))
        if self.uses_context:
            self.context_proj = nn.Linear(config.condition_dim, w)
            self.null_context = nn.Parameter(torch.randn(1, 1, w) * 0.02)
            self.context_norm = nn.LayerNorm(w)

        self.blocks = nn.ModuleList(
            Block(width=w, heads=config.heads, ffn_mult=config.ffn_mult, dropout=config.dropout,
                  modulated=self.uses_aligned, cross=self.uses_context)
            for _ in range(config.layers)
        )
        self.final_norm = nn.LayerNorm(w, elementwise_affine=not self.uses_aligned)
        self.to_logits = nn.Linear(w, k * vocab)  # the k output heads, fused
        load_trained(self, config.weights, what=f"the maskvat_{variant} generator")

    # -- conditioning, once per video -------------------------------------------------------
    def prepare(self, condition: Conditioning, *, drop: Tensor | None = None) -> Conditioning:
        b = condition.batch_size
        if drop is not None and tuple(drop.shape) != (b,):
            raise ValueError(f"drop must be [b] = [{b}], got {tuple(drop.shape)}")
        aligned = context = None
        if self.uses_aligned:
            seq = self._require(condition.aligned, "aligned")
            cond = self.aligned_proj(seq.values)  # [b, l, w]
            real = seq.valid_mask()  # [b, l]: steps without video use the null conditioning
            if drop is not None:
                real = real & ~drop.to(real.device)[:, None]
            cond = torch.where(real[..., None], cond, self.null_aligned.to(cond.dtype))
            mods = [block.modulations(cond) for block in self.blocks]  # layers x [b, l, 6w]
            shift, scale = self.final_adaln(cond).chunk(2, dim=-1)  # [b, l, w] each
            mods += [shift, scale + 1]
            # in the residual stream's dtype (fp32 under bf16 autocast): mixed-dtype elementwise
            # ops in every step would cost more than the memory saved
            values = torch.cat(mods, dim=-1).to(self.embed.weight.dtype)
            aligned = FeatureSequence(values=values, rate=seq.rate, start=seq.start)
        if self.uses_context:
            seq = self._require(condition.context, "context")
            valid = seq.valid_mask()  # [b, s]
            if drop is not None:
                valid = valid & ~drop.to(valid.device)[:, None]
            ctx = self.context_proj(seq.values)  # [b, s, w]
            ctx = torch.cat([self.null_context.to(ctx.dtype).expand(b, -1, -1), ctx], dim=1)
            valid = F.pad(valid, (1, 0), value=True)  # the null token is always valid
            ctx = self.context_norm(ctx)
            kv = torch.cat([block.cross_kv(ctx) for block in self.blocks], dim=-1)
            kv = kv.masked_fill(~valid[..., None], 0.0)  # [b, 1 + s, layers * 2w]
            context = FeatureSequence(values=kv, rate=seq.rate, start=seq.start, mask=valid)
        return Conditioning(aligned=aligned, context=context)

    def _require(self, seq: FeatureSequence | None, part: str) -> FeatureSequence:
        if seq is None:
            raise UserError(
                f"generator maskvat_{self.variant} needs Conditioning.{part}; set `{part}: true` "
                "in the fuser's options"
            )
        if seq.dim != self.condition_dim:
            raise UserError(
                f"generator maskvat_{self.variant} has condition_dim {self.condition_dim} but the "
                f"{part} conditioning is {seq.dim} wide; make condition_dim equal the fuser's dim"
            )
        return seq

    # -- one decoding step ------------------------------------------------------------------
    def predict(
        self,
        codes: Tensor,
        mask: Tensor,
        prepared: Conditioning,
        *,
        return_hidden: bool = False,
        level: int | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        b, k, l = codes.shape
        cfg, w = self.config, self.config.width
        if k != self.n_codebooks:
            raise ValueError(f"codes have {k} codebooks, the generator expects {self.n_codebooks}")
        if l > cfg.max_frames:
            raise UserError(
                f"{l} code frames are more than max_frames = {cfg.max_frames} of generator "
                f"maskvat_{self.variant}; raise max_frames or generate shorter windows"
            )
        mods = final = kv = kv_mask = None
        if self.uses_aligned:
            mods, final = self._modulations(prepared, b, l)
        if self.uses_context:
            kv, kv_mask = self._keys_values(prepared, b)

        # input: sum over levels of each level's embedding ([MASK] where masked)
        index = torch.where(mask, self.codebook_size, codes) + self.level_offset[:, None]
        x = self.embed(rearrange(index, "b k l -> (b l) k"))  # [(b l), w]
        x = rearrange(x, "(b l) w -> b l w", b=b) + self.positions[:l].to(x.dtype)

        rotary = (self.rotary[0, :l], self.rotary[1, :l])
        paths = self.attention_paths(b, l, None if kv is None else kv.shape[1], kv_mask, x.dtype)
        for i, block in enumerate(self.blocks):
            x = block(
                x, rotary, None if mods is None else mods[i],
                None if kv is None else kv[..., i * 2 * w:(i + 1) * 2 * w], kv_mask, paths,
            )

        hidden = self.final_norm(x)  # [b, l, w]
        if final is not None:
            hidden = modulate(hidden, final[0], final[1])
        if level is None:
            logits = rearrange(self.to_logits(hidden), "b l (k v) -> b k l v", k=k)  # a view
        else:  # only that level's head: 1/k of the output projection
            rows = slice(level * self.codebook_size, (level + 1) * self.codebook_size)
            head = self.to_logits
            logits = F.linear(hidden, head.weight[rows], head.bias[rows]).unsqueeze(1)
        return (logits, hidden) if return_hidden else logits

    def attention_paths(self, b: int, l: int, keys: int | None, kv_mask: Tensor | None,
                        dtype: torch.dtype) -> tuple[str, str]:
        """The attention paths (self, cross) of a ``predict`` on ``b`` rows of ``l`` frames
        with ``keys`` context keys: the ``attention`` option resolved by
        :func:`choose_attention`; always SDPA in training (dropout)."""
        setting = "sdpa" if self.training else self.config.attention
        device, heads = self.embed.weight.device, self.config.heads
        if torch.is_autocast_enabled(device.type):  # the products run in autocast's dtype
            dtype = torch.get_autocast_dtype(device.type)
        shape = (b, heads, l, self.config.width // heads)
        own = choose_attention(setting, shape, l, dtype=dtype, device=device, masked=False)
        cross = "sdpa" if keys is None else choose_attention(
            setting, shape, keys, dtype=dtype, device=device, masked=kv_mask is not None)
        return own, cross

    def _modulations(self, prepared: Conditioning, b: int, l: int) -> tuple[Tensor, Tensor]:
        """Per-block ``[layers, b, l, 6, w]`` and final ``[2, b, l, w]`` views of the prepared
        aligned sequence."""
        w, layers = self.config.width, self.config.layers
        seq = prepared.aligned
        if seq is None or seq.dim != (6 * layers + 2) * w:
            raise ValueError(
                f"maskvat_{self.variant}.predict needs the output of its own prepare(condition); "
                "got an unprepared conditioning"
            )
        if seq.batch_size != b or seq.length != l:
            raise UserError(
                f"the aligned conditioning has {seq.length} frames for {seq.batch_size} rows but "
                f"the codes have {l} frames for {b} rows; the fuser must produce num_frames = "
                "the number of code frames"
            )
        blocks, final = seq.values.split([6 * layers * w, 2 * w], dim=-1)
        blocks = rearrange(blocks, "b l (n six w) -> n b l six w", n=layers, six=6)
        return blocks, rearrange(final, "b l (two w) -> two b l w", two=2)

    def _keys_values(self, prepared: Conditioning, b: int) -> tuple[Tensor, Tensor | None]:
        """The prepared ``[b, s, layers * 2w]`` keys and values and ``[b, 1, 1, s]`` key mask."""
        w, layers = self.config.width, self.config.layers
        seq = prepared.context
        if seq is None or seq.dim != 2 * layers * w:
            raise ValueError(
                f"maskvat_{self.variant}.predict needs the output of its own prepare(condition); "
                "got an unprepared conditioning"
            )
        if seq.batch_size != b:
            raise ValueError(f"the context has {seq.batch_size} rows but the codes have {b}")
        mask = None if seq.mask is None else rearrange(seq.mask, "b s -> b 1 1 s")
        return seq.values, mask
