"""The ``synchformer`` reranker's network: the AST audio tower, the synchronisation module and
:class:`Synchformer` (the plug-in, its options and its documentation are
:mod:`v2a_plugins.rerankers.synchformer`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from v2a import FeatureSequence
from v2a.weights import is_random, load_into
from v2a_plugins.audio_encoders.mel_model import mel_filterbank
from v2a_plugins.rerankers.offset_scoring import OffsetReranker
from v2a_plugins.rerankers.offset_scoring import window_starts as offset_windows
from v2a_plugins.rerankers.synchformer import (
    AST_MEAN,
    AST_STD,
    CENTRE_TO_START,
    HOP,
    LOG_FLOOR,
    MAX_OFFSET,
    N_FFT,
    NUM_OFFSETS,
    PATCH,
    PATCH_STRIDE,
    SAMPLE_RATE,
    SEGMENT_SAMPLES,
    SEGMENT_SECONDS,
    SPEC_FRAMES,
    STEP_SAMPLES,
    STEP_SECONDS,
    WINDOW,
    SynchformerSyncConfig,
)
from v2a_plugins.visual_encoders.synchformer import TOKENS_PER_SEGMENT, synchformer_file
from v2a_plugins.visual_encoders.synchformer_model import CLSAggregator, checkpoint_part


def audio_tokens_per_segment() -> int:
    """Time patches per segment spectrogram (6)."""
    return (SPEC_FRAMES - PATCH) // PATCH_STRIDE + 1


def window_seconds(segments: int) -> float:
    """The length of a window of ``segments`` segments (14 → 4.8 s)."""
    return (segments - 1) * STEP_SECONDS + SEGMENT_SECONDS


def window_starts(seconds: float, segments: int) -> list[int]:
    """The first segment of each window :meth:`Synchformer.score` reads in ``seconds`` of audio
    (:func:`~v2a_plugins.rerankers.offset_scoring.window_starts` for windows of ``segments``)."""
    return offset_windows(seconds, window_seconds(segments), STEP_SECONDS)


# -- audio tower -----------------------------------------------------------------------------------


def holder(**modules: nn.Module) -> nn.Module:
    """A module whose children are ``modules`` (to give parameters the checkpoint's names)."""
    module = nn.Module()
    for name, child in modules.items():
        setattr(module, name, child)
    return module


class ASTLayer(nn.Module):
    """A pre-LN ViT layer with the Hugging Face AST parameter names."""

    def __init__(self, *, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attention = holder(
            attention=holder(query=nn.Linear(dim, dim), key=nn.Linear(dim, dim),
                             value=nn.Linear(dim, dim)),
            output=holder(dense=nn.Linear(dim, dim)),
        )
        self.intermediate = holder(dense=nn.Linear(dim, 4 * dim))
        self.output = holder(dense=nn.Linear(4 * dim, dim))
        self.layernorm_before = nn.LayerNorm(dim, eps=1e-12)
        self.layernorm_after = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        a = self.attention.attention
        h = self.layernorm_before(x)
        q, k, v = (rearrange(p(h), "n t (h e) -> n h t e", h=self.heads) for p in (a.query, a.key, a.value))
        attended = rearrange(F.scaled_dot_product_attention(q, k, v), "n h t e -> n t (h e)")
        x = x + self.attention.output.dense(attended)
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class ASTTower(nn.Module):
    """Segment waveforms ``[n, 10240]`` at 16 kHz → ``[n, 6, audio_width]``."""

    def __init__(self, config: SynchformerSyncConfig):
        super().__init__()
        c, d = config, config.audio_width
        self.freq_patches = (c.mel_bins - PATCH) // PATCH_STRIDE + 1
        tokens = self.freq_patches * audio_tokens_per_segment()
        self.ast = holder(
            embeddings=holder(patch_embeddings=holder(projection=nn.Conv2d(1, d, PATCH, PATCH_STRIDE))),
            encoder=holder(layer=nn.ModuleList(ASTLayer(dim=d, heads=c.audio_heads)
                                               for _ in range(c.audio_depth))),
            layernorm=nn.LayerNorm(d, eps=1e-12),
        )
        embeddings = self.ast.embeddings
        for name, shape in (("cls_token", (1, 1, d)), ("distillation_token", (1, 1, d)),
                            ("position_embeddings", (1, tokens + 2, d))):
            setattr(embeddings, name, nn.Parameter(torch.zeros(shape)))
            nn.init.trunc_normal_(getattr(embeddings, name), std=0.02)
        self.freq_attn_agg = CLSAggregator(dim=d, heads=c.audio_heads, hidden=4 * d)
        fbank = mel_filterbank(N_FFT, c.mel_bins, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2)
        self.register_buffer("fbank", fbank, persistent=False)
        self.register_buffer("window", torch.hann_window(WINDOW), persistent=False)

    def spectrogram(self, wav: Tensor) -> Tensor:
        """``[n, samples]`` → normalised log-mel ``[n, 66, mel_bins]`` (time, frequency)."""
        spec = torch.stft(wav.to(self.window.dtype), N_FFT, HOP, WINDOW, self.window, center=True,
                          pad_mode="reflect", return_complex=True).abs().pow(2)
        mel = torch.log(torch.einsum("nft,fm->ntm", spec, self.fbank) + LOG_FLOOR)
        mel = F.pad(mel, (0, 0, 0, max(0, SPEC_FRAMES - mel.shape[1])))[:, :SPEC_FRAMES]
        return (mel - AST_MEAN) / (2 * AST_STD)

    def forward(self, wav: Tensor) -> Tensor:
        e = self.ast.embeddings
        spec = rearrange(self.spectrogram(wav), "n t f -> n 1 f t")
        x = rearrange(e.patch_embeddings.projection(spec), "n d f t -> n (f t) d")
        n = x.shape[0]
        x = torch.cat([e.cls_token.expand(n, -1, -1), e.distillation_token.expand(n, -1, -1), x], 1)
        x = x + e.position_embeddings
        for layer in self.ast.encoder.layer:
            x = layer(x)
        x = rearrange(self.ast.layernorm(x)[:, 2:], "n (f t) d -> (n t) f d", f=self.freq_patches)
        return rearrange(self.freq_attn_agg(x), "(n t) d -> n t d", n=n)


# -- synchronisation module ------------------------------------------------------------------------


class SyncBlock(nn.Module):
    """A pre-LN transformer block with the official sync module's parameter names."""

    def __init__(self, *, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = holder(key=nn.Linear(dim, dim), query=nn.Linear(dim, dim),
                           value=nn.Linear(dim, dim), proj=nn.Linear(dim, dim))
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        h, a = self.ln1(x), self.attn
        q, k, v = (rearrange(p(h), "b t (h e) -> b h t e", h=self.heads) for p in (a.query, a.key, a.value))
        x = x + a.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h t e -> b t (h e)"))
        return x + self.mlp(self.ln2(x))


class SyncTransformer(nn.Module):
    """``[b, s * 8, d]`` visual and ``[b, s * 6, d]`` audio tokens → ``[b, 21]`` logits in the
    official label order."""

    def __init__(self, config: SynchformerSyncConfig):
        super().__init__()
        d, s = config.sync_width, config.segments
        self.OFF_tok = nn.Parameter(torch.randn(1, 1, d))
        self.MOD_tok = nn.Parameter(torch.randn(1, 1, d))
        self.vis_in_lnorm, self.aud_in_lnorm = nn.LayerNorm(d), nn.LayerNorm(d)
        tokens = 2 + s * (TOKENS_PER_SEGMENT + audio_tokens_per_segment())
        self.pos_emb_cfg = holder()
        self.pos_emb_cfg.pos_emb = nn.Parameter(torch.randn(1, tokens, d))
        self.blocks = nn.Sequential(*(SyncBlock(dim=d, heads=config.sync_heads)
                                      for _ in range(config.sync_depth)))
        self.ln_f = nn.LayerNorm(d)
        self.off_head = nn.Linear(d, NUM_OFFSETS)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, visual: Tensor, audio: Tensor) -> Tensor:
        b = visual.shape[0]
        x = torch.cat([self.OFF_tok.expand(b, -1, -1), self.vis_in_lnorm(visual),
                       self.MOD_tok.expand(b, -1, -1), self.aud_in_lnorm(audio)], dim=1)
        x = self.ln_f(self.blocks(x + self.pos_emb_cfg.pos_emb))
        return self.off_head(x[:, 0])


# -- the reranker ----------------------------------------------------------------------------------


class Synchformer(OffsetReranker):
    """Synchformer's offset classifier: a :class:`~v2a.interfaces.Reranker` (``score`` is
    ``-|offset|``) and a :class:`~v2a.interfaces.SyncClassifier` (``offsets``,
    ``offset_logits``)."""

    name = "synchformer"
    step_seconds = STEP_SECONDS
    width_rule = "8 * video_width"
    width_hint = "set video_width to the encoder's width"

    def __init__(self, config: SynchformerSyncConfig | None = None):
        super().__init__()
        self.config = c = config or SynchformerSyncConfig()
        self.afeat_extractor = ASTTower(c)
        self.vproj = nn.Linear(c.video_width, c.sync_width)
        self.aproj = nn.Linear(c.audio_width, c.sync_width)
        self.transformer = SyncTransformer(c)
        if not is_random(c.weights):
            self.load_official(c.weights)
        self.requires_grad_(False)  # inference only: nothing here trains it
        self.sample_rate = SAMPLE_RATE
        self.window_seconds = window_seconds(c.segments)  # what one offset prediction reads
        self.video_streams = {c.video_stream: TOKENS_PER_SEGMENT * c.video_width}
        self.offsets: Sequence[float] = tuple(
            round(-MAX_OFFSET + i * 2 * MAX_OFFSET / (NUM_OFFSETS - 1), 6) for i in range(NUM_OFFSETS)
        )
        self.eval()

    def load_official(self, weights: str) -> None:
        """Load the audio tower, projections and sync module of an official checkpoint."""
        path, checkpoint = synchformer_file(weights, "the synchformer reranker")
        state = {}
        for part in ("afeat_extractor.", "vproj.", "aproj.", "transformer."):
            state.update({part + k: v for k, v in checkpoint_part(checkpoint, path, part).items()})
        agg = "afeat_extractor.freq_attn_agg."
        inner = {k[len(agg):]: v for k, v in state.items() if k.startswith(agg)}
        state = {k: v for k, v in state.items() if not k.startswith(agg)}
        state.update({agg + k: v for k, v in self.afeat_extractor.freq_attn_agg.load_layout(inner).items()})
        load_into(self, state, path, "the synchformer reranker (audio tower and sync module)")

    # -- inputs -----------------------------------------------------------------------------------
    def window_tokens(self, audio: Tensor, video: FeatureSequence, window: int) -> tuple[Tensor, Tensor]:
        """The window of ``segments`` segments starting ``window`` segments after the stream's
        first: visual tokens ``[b, s * 8, video_width]`` and audio segments ``[b, s, 10240]``."""
        s = self.config.segments
        first = video.start + window * STEP_SECONDS
        grid = video.resample(1 / STEP_SECONDS, s, first)
        values = grid.values.masked_fill(~grid.valid_mask().unsqueeze(-1), 0.0)
        visual = rearrange(values, "b s (k d) -> b (s k) d", k=TOKENS_PER_SEGMENT)
        begin = max(0, round((first - CENTRE_TO_START) * SAMPLE_RATE))
        need = (s - 1) * STEP_SAMPLES + SEGMENT_SAMPLES
        wav = audio.mean(dim=1)[:, begin:begin + need]
        wav = F.pad(wav, (0, need - wav.shape[1]))
        return visual, wav.unfold(1, SEGMENT_SAMPLES, STEP_SAMPLES)

    # -- SyncClassifier ---------------------------------------------------------------------------
    def offset_logits(self, audio: Tensor, video: Mapping[str, FeatureSequence], *,
                      window: int = 0) -> Tensor:
        """``audio: [b, c, n]`` at 16 kHz and the video streams → ``[b, 21]`` logits over
        :attr:`offsets`, for the window starting ``window`` segments after the stream's first."""
        visual, segments = self.window_tokens(audio, self.video_sequence(video), window)
        b = segments.shape[0]
        dtype = self.vproj.weight.dtype
        tokens = self.afeat_extractor(rearrange(segments, "b s n -> (b s) n"))
        audio_tokens = rearrange(tokens, "(b s) t d -> b (s t) d", b=b)
        logits = self.transformer(self.vproj(visual.to(dtype)), self.aproj(audio_tokens))
        return logits.flip(-1)  # official label order → v2a's sign (see the module docstring)
