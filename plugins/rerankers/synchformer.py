"""Synchformer's synchronisation classifier as a v2a reranker (plug-in ``synchformer``).

Synchformer (Iashin, Xie, Rahtu, Zisserman 2024) predicts how far a clip's audio is shifted
against its video, as one of 21 offset classes from -2.0 to +2.0 s in 0.2 s steps, from a 4.8 s
window cut into 14 segments of 0.64 s every 0.32 s. Written from the paper and the public
description of its official implementation (v-iashin/Synchformer); no code is taken from it.
The visual tower is the ``synchformer`` visual encoder (its stream, one step per segment holding
8 vectors, is what this reranker reads); this module holds the other two parts:

* **Audio tower** (AST-style, per segment): the segment's 10240 samples at 16 kHz (mono: the
  channels are averaged) → a power mel spectrogram (FFT 1024, Hann window of 400, hop 160,
  centred with reflection, 128 HTK mel bands, no area normalisation) → ``log(x + 1e-6)`` → 65
  frames padded with zeros to 66 → ``(x + 4.2677393) / (2 * 4.5689974)`` (AST's AudioSet
  statistics) → 16 x 16 patches with stride 10 in both axes (12 frequency x 6 time patches), a
  CLS and a distillation token, learned positions, ``audio_depth`` pre-LN ViT layers, a final
  LayerNorm → the 12 frequency tokens of each of the 6 time steps aggregated by one transformer
  encoder layer with a CLS token (as the visual tower aggregates space): 6 vectors per segment.
* **Synchronisation module**: visual and audio vectors are linearly projected (``vproj``,
  ``aproj``), layer-normed per modality, laid out as ``[OFF, 14 x 8 visual, MOD, 14 x 6 audio]``
  (198 tokens) with a learned position embedding, passed through ``sync_depth`` pre-LN blocks
  (8 heads, MLP x 4) and a final LayerNorm; a linear head on the OFF token gives 21 logits.
* **Sign**: in Synchformer's own labels a positive offset means the audio track was cut that
  much *later* (the sound comes before its picture). v2a's :class:`~v2a.interfaces.
  SyncClassifier` counts positive as "the audio comes late", so :attr:`offsets` ascend from
  -2.0 to +2.0 in v2a's sense and :meth:`offset_logits` returns the official logits reversed.
* **Windows**: :meth:`offset_logits` reads one window of ``segments`` segments starting at the
  video stream's first segment (or ``window`` segments later); audio is taken from the same
  seconds (the stream's first segment begins ``7.5 / 25`` s before the time its step describes)
  and zero-padded when short, as the official data pipeline pads; the video stream is resampled
  onto the segment grid (3.125 Hz), its padded steps zeroed. :meth:`score` is
  ``-|offset|`` (the expected offset under the softmax, or the argmax class with
  ``score: argmax``), averaged over the first and last windows of the candidate, as DeSync
  scores a clip longer than one window.
* **Weights** (``weights``): ``"none"``, or the path of an official Synchformer checkpoint
  (``{"model": state_dict}``): its ``afeat_extractor.``, ``vproj.``, ``aproj.`` and
  ``transformer.`` entries are loaded (the visual encoder loads ``vfeat_extractor.`` from the
  same file). Key names are *inferred* from the official source, not checked against a
  downloaded file: ``afeat_extractor.ast.embeddings.{cls_token,distillation_token,
  position_embeddings [1, 74, 768],patch_embeddings.projection}``, ``afeat_extractor.ast.
  encoder.layer.{i}.{attention.attention.{query,key,value},attention.output.dense,
  intermediate.dense,output.dense,layernorm_before,layernorm_after}``, ``afeat_extractor.ast.
  layernorm``, ``afeat_extractor.freq_attn_agg.{cls_token,self_attn.…,linear1,linear2,norm1,
  norm2}``, ``transformer.{OFF_tok,MOD_tok,vis_in_lnorm,aud_in_lnorm,pos_emb_cfg.pos_emb
  [1, 198, 768],blocks.{i}.{ln1,ln2,attn.{key,query,value,proj},mlp.0,mlp.2},ln_f,off_head}``.
  ``"pretrained"`` is refused with where to get the file (nothing is downloaded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from v2a import ComponentSpec, FeatureSequence, hookimpl
from v2a.errors import UserError
from v2a.weights import is_random, load_into
from v2a_plugins.audio_encoders.mel import mel_filterbank
from v2a_plugins.rerankers.offset_scoring import OffsetReranker
from v2a_plugins.rerankers.offset_scoring import window_starts as offset_windows
from v2a_plugins.visual_encoders.synchformer import (
    synchformer_pretrained_files,
    SEGMENT_FRAMES,
    SEGMENT_STEP,
    TOKENS_PER_SEGMENT,
    CLSAggregator,
    checkpoint_part,
    synchformer_file,
)

SAMPLE_RATE = 16000
#: The video rate Synchformer's segments are defined at, and their lengths in seconds/samples.
FPS = 25.0
SEGMENT_SECONDS, STEP_SECONDS = SEGMENT_FRAMES / FPS, SEGMENT_STEP / FPS  # 0.64 s, 0.32 s
SEGMENT_SAMPLES = round(SEGMENT_SECONDS * SAMPLE_RATE)  # 10240
STEP_SAMPLES = round(STEP_SECONDS * SAMPLE_RATE)  # 5120
#: From the time a visual step describes (its segment's centre) back to the segment's start.
CENTRE_TO_START = (SEGMENT_FRAMES - 1) / 2 / FPS
#: The spectrogram: FFT, window, hop; frames per segment after padding; AST's statistics.
N_FFT, WINDOW, HOP, SPEC_FRAMES = 1024, 400, 160, 66
LOG_FLOOR = 1e-6
AST_MEAN, AST_STD = -4.2677393, 4.5689974
#: AST patches and their stride (both axes).
PATCH, PATCH_STRIDE = 16, 10
#: The offset classes (v2a's sign: positive when the audio comes late).
NUM_OFFSETS, MAX_OFFSET = 21, 2.0

Score = Literal["expected", "argmax"]


@dataclass
class SynchformerSyncConfig:
    """Options of the ``synchformer`` reranker (defaults: the real sizes).

    ``weights``: ``"none"`` or an official checkpoint's path. ``video_stream``: the visual stream
    (recipe ``visual_encoders`` name) it reads, made by the ``synchformer`` visual encoder whose
    ``width`` is ``video_width`` (the stream is ``8 * video_width`` wide). ``segments``: segments
    per window (14: 4.8 s). ``mel_bins``, ``audio_width``/``audio_depth``/``audio_heads``: the
    AST (128, 768/12/12); ``sync_width``/``sync_depth``/``sync_heads``: the synchronisation
    module (768/3/8). ``score``: ``expected`` or ``argmax`` offset.
    """

    weights: str = "none"
    """none (random) or the path of an official Synchformer checkpoint"""
    video_stream: str = "synchformer"
    """the stream it reads, made by a synchformer visual encoder"""
    video_width: int = 768
    """that encoder's width (the stream is 8 * video_width wide)"""
    segments: int = 14
    """segments per window (14: 4.8 s)"""
    mel_bins: int = 128
    """mel bins of the audio spectrogram transformer's input"""
    audio_width: int = 768
    """width of the audio spectrogram transformer"""
    audio_depth: int = 12
    """blocks of the audio spectrogram transformer"""
    audio_heads: int = 12
    """attention heads of the audio spectrogram transformer"""
    sync_width: int = 768
    """width of the synchronisation module"""
    sync_depth: int = 3
    """blocks of the synchronisation module"""
    sync_heads: int = 8
    """attention heads of the synchronisation module"""
    score: Score = "expected"
    """score a candidate by the expected offset or by the most likely one"""

    def __post_init__(self) -> None:
        if self.segments < 1 or self.mel_bins < PATCH:
            raise UserError(
                f"the synchformer reranker needs segments >= 1 and mel_bins >= {PATCH}, got "
                f"{self.segments} and {self.mel_bins}."
            )
        for width, heads in ((self.audio_width, self.audio_heads), (self.sync_width, self.sync_heads)):
            if width % heads:
                raise UserError(
                    f"the synchformer reranker's widths must be multiples of their heads "
                    f"(got {width} and {heads})."
                )


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


def synchformer_sync_properties(config: SynchformerSyncConfig) -> dict:
    """The reranker's attributes, known without building it (``ComponentSpec.properties``)."""
    return {"sample_rate": SAMPLE_RATE,
            "video_streams": {config.video_stream: TOKENS_PER_SEGMENT * config.video_width}}


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="reranker", name="synchformer", build=Synchformer, config=SynchformerSyncConfig,
        properties=synchformer_sync_properties, pretrained_files=synchformer_pretrained_files,
        description="Synchformer (Iashin et al. 2024): 21 offset classes, score -|offset|",
    ))
