"""SparseSync's synchronisation classifier as a v2a reranker (plug-in ``sparsesync``), with the
S3D feature-map stream it reads (visual encoder ``sparsesync``).

SparseSync (Iashin, Xie, Rahtu, Zisserman 2022, "Sparse in Space and Time") predicts how far a
5 s clip's audio is shifted against its video, as one of 21 offset classes from -2.0 to +2.0 s
in 0.2 s steps; MaskVAT's SS metric reads it. Written from the paper and the public description
of its official implementation (v-iashin/SparseSync, its VGGSound-Sparse configuration
``22-07-28T15-49-45``); no code is taken from it.

* **Visual tower** (visual encoder ``sparsesync``): kylemin's S3D (Kinetics-400; torchvision's
  ``s3d`` is the same network, see :mod:`v2a_plugins.visual_encoders.s3d`) on 25 fps frames,
  shortest side resized to 256 and centre-cropped to 224 (the official videos are re-encoded at
  256 px, *inferred* to mean the shortest side), ImageNet statistics. Unlike the ``s3d`` stream
  the feature map is **not** pooled over space: each step (every 8 frames) holds the 7 x 7 grid
  of 1024-wide vectors, flattened row-major as ``(h w d)`` into ``7 * 7 * 1024`` values.
  125 frames (5 s) give 16 steps.
* **Audio tower**: the window's 80000 samples at 16 kHz (mono: the channels are averaged) →
  power spectrogram (FFT 512, periodic Hann window of 512, hop 128, centred with reflection:
  ``[257, 626]``) → ``log(x + 1e-6)`` → each frequency standardised over time (``(x - mean) /
  (std + 1e-6)``, unbiased std) → torchvision's ResNet-18 with a 1-channel stem, up to
  ``layer4``: ``[512, 9, 20]`` (frequency x time).
* **Bridge**: the 1024-wide visual vectors go through a 1 x 1 x 1 convolution to ``width`` (512)
  and a GELU; the audio vectors are used as they are (so ``width`` is 512).
* **Selectors and classifier**: each modality is layer-normed, given a learned factorised
  position embedding (visual: time/height/width tables of ``width // 3`` each, time taking the
  remainder, concatenated in the order time, width, height; audio: frequency then time, halves),
  and flattened (visual ``t h w``, audio ``f t``). ``selectors`` (16) learned queries per
  modality, plus a learned position table, pass ``depth`` (3) decoder blocks (pre-LN
  self-attention, cross-attention to the modality's features, MLP x 4, GELU). The two sets of
  selectors are layer-normed per modality and laid out as ``[OFF, visual selectors, MOD, audio
  selectors]`` (no position embedding), through ``depth`` pre-LN encoder blocks and a final
  LayerNorm; a bias-free linear head on the OFF token gives 21 logits. Attention has ``heads``
  (8) heads scaled by ``1 / sqrt(head width)``. Later forks add a "selector mixing" stage; the
  published configuration has none, and neither has this module.
* **Sign**: in SparseSync's labels a positive offset means the audio track was cut that much
  *later* than the video (the sound comes before its picture). v2a's
  :class:`~v2a.interfaces.SyncClassifier` counts positive as "the audio comes late", so
  :attr:`offsets` ascend from -2.0 to +2.0 in v2a's sense and :meth:`offset_logits` returns the
  official logits reversed.
* **Windows**: :meth:`offset_logits` reads one window (16 visual steps, 5 s of audio) starting at
  the stream's first step, or ``window`` steps (0.32 s each) later; the audio is taken from the
  same seconds (the stream's first step describes frame 2 of its clip, see the ``s3d`` encoder)
  and zero-padded when short; padded visual steps are zeroed. :meth:`score` is ``-|offset|``
  (expected offset under the softmax, or the argmax class), averaged over the first and the last
  whole windows of the candidate.
* **Weights** (``weights``, both components): ``"none"``, or the path of an official SparseSync
  checkpoint (``{"model": state_dict}``). The visual encoder loads its ``vfeat_extractor.base.``
  entries (kylemin's S3D layout, converted as the ``s3d`` encoder does; a bare S3D file such as
  ``S3D_kinetics400_torchified.pt`` works too); the reranker loads ``afeat_extractor.`` (a
  torchvision ResNet's names: ``conv1``, ``bn1``, ``layer1..4``; no ``fc``), ``v_bridge.bridge.0``
  (the 1 x 1 x 1 conv) and ``transformer.`` (``pre_lnorm_vis``, ``pre_lnorm_aud``,
  ``vis_pos_emb.{time,height,width}_embed``, ``aud_pos_emb.{freq,time}_embed``,
  ``{v,a}_selector.{selectors,selectors_pos_emb.time_embed,blocks.{i}.{ln1,ln2,ln3,attn.{key,
  query,value,proj},xattn.…,mlp.0,mlp.2}}``, ``global_transformer.{vis_in_lnorm,aud_in_lnorm,
  OFF_tok,MOD_tok,blocks.{i}.{ln1,ln2,attn.…,mlp.0,mlp.2},ln_f}``, ``off_head``). These names
  are *inferred* from the official source's module structure, not checked against a downloaded
  file. ``"pretrained"`` is refused with where to get the file (nothing is downloaded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from v2a import ComponentSpec, FeatureSequence, VisualEncoder, hookimpl
from v2a.errors import UserError
from v2a.pretrained import nothing_to_download
from v2a.sequences import first_frame_time
from v2a.weights import WeightsError, downloaded_file, is_random, load_checkpoint, load_into
from v2a_plugins.rerankers.offset_scoring import OffsetReranker
from v2a_plugins.rerankers.offset_scoring import window_starts as offset_windows
from v2a_plugins.visual_encoders.s3d import (
    DIM as S3D_DIM,
)
from v2a_plugins.visual_encoders.s3d import (
    FIRST_CENTRE,
    IMAGENET,
    STRIDE,
    build_s3d,
    num_features,
    resize_and_crop,
)

SAMPLE_RATE = 16000
FPS = 25.0
#: SparseSync's window (``crop_len_sec``) and the time between visual steps.
WINDOW_SECONDS = 5.0
STEP_SECONDS = STRIDE / FPS  # 0.32 s
#: The spectrogram: FFT (= window) and hop; the log floor and the standardisation's epsilon.
N_FFT, HOP = 512, 128
LOG_FLOOR = NORM_EPS = 1e-6
#: Frames: shortest side resized to this, then centre-cropped to ``crop``.
RESIZE = 256
#: Width of ResNet-18's last stage (the audio vectors; the sync module's width).
AUDIO_DIM = 512
NUM_OFFSETS, MAX_OFFSET = 21, 2.0
CHECKPOINT = "the SparseSync checkpoint (e.g. 22-07-28T15-49-45.pt, VGGSound-Sparse)"
PAGE = "https://github.com/v-iashin/SparseSync"

Score = Literal["expected", "argmax"]


def sparsesync_file(weights: str, what: str) -> Path:
    """The local checkpoint ``weights`` names (``pretrained`` is refused with where to get it)."""
    return downloaded_file(weights, model=what, file=CHECKPOINT, page=PAGE)


def halvings(n: int, times: int = 5) -> int:
    """The length ``n`` becomes through ResNet's ``times`` stride-2 stages (each ``ceil(n / 2)``)."""
    for _ in range(times):
        n = -(-n // 2)
    return n


# -- visual encoder --------------------------------------------------------------------------------


@dataclass
class SparseSyncVisualConfig:
    """Options of the ``sparsesync`` visual encoder.

    ``weights``: ``"none"`` or a SparseSync (or S3D) checkpoint's path. ``fps``: the input rate
    (25). ``resize``/``crop``: shortest side, then the centre crop (256/224; the grid is
    ``crop / 32`` on a side).
    """

    weights: str = "none"
    """none (random) or the path of a SparseSync (or S3D) checkpoint"""
    fps: float = FPS
    """frame rate of the input"""
    resize: int = RESIZE
    """the frames' shortest side is resized to this before cropping"""
    crop: int = 224
    """side of the centre crop; the grid is crop / 32 on a side"""

    def __post_init__(self) -> None:
        if not self.fps > 0 or self.crop < 32 or self.resize < self.crop:
            raise UserError(
                f"the sparsesync visual encoder needs fps > 0 and 32 <= crop <= resize, got "
                f"fps={self.fps}, crop={self.crop}, resize={self.resize}."
            )


def grid_side(crop: int) -> int:
    """S3D's spatial grid side for ``crop``-pixel frames (224 → 7)."""
    return halvings(crop)


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


def visual_properties(config: SparseSyncVisualConfig) -> dict:
    """The visual encoder's attributes, known without building it (``ComponentSpec.properties``)."""
    return {"fps": float(config.fps), "rate": config.fps / STRIDE,
            "frame_size": (config.crop, config.crop),
            "dim": grid_side(config.crop) ** 2 * S3D_DIM}


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


@dataclass
class SparseSyncConfig:
    """Options of the ``sparsesync`` reranker (defaults: the published VGGSound-Sparse sizes).

    ``weights``: ``"none"`` or an official checkpoint's path. ``video_stream``: the stream it
    reads (a ``sparsesync`` visual encoder's, ``grid * grid * 1024`` wide; ``grid`` 7 for 224 px
    crops). ``window_seconds``: audio per window (5.0: 16 visual steps). ``width``: the
    visual bridge's output and the selectors' width (512, ResNet-18's, since the audio is not
    projected); ``depth``/``heads``/``selectors``: 3/8/16. ``score``: ``expected`` or ``argmax``.
    """

    weights: str = "none"
    """none (random) or the path of an official SparseSync checkpoint"""
    video_stream: str = "sparsesync"
    """the stream it reads, made by a sparsesync visual encoder"""
    grid: int = 7
    """visual grid cells on a side (7 for 224 px crops)"""
    window_seconds: float = WINDOW_SECONDS
    """seconds of audio per window (5.0: 16 visual steps)"""
    width: int = AUDIO_DIM
    """width of the visual bridge's output and of the selectors (512, ResNet-18's)"""
    depth: int = 3
    """layers of the selectors"""
    heads: int = 8
    """attention heads of the selectors (must divide width)"""
    selectors: int = 16
    """learned selector queries"""
    score: Score = "expected"
    """score a candidate by the expected offset or by the most likely one"""

    def __post_init__(self) -> None:
        if self.width != AUDIO_DIM:
            raise UserError(f"the sparsesync reranker's width must be {AUDIO_DIM} (ResNet-18's "
                            f"audio vectors enter the selectors unprojected), got {self.width}.")
        if self.width % self.heads or self.grid < 1 or self.selectors < 1 or self.depth < 1:
            raise UserError(
                f"the sparsesync reranker needs width divisible by heads and grid, selectors, "
                f"depth >= 1, got width={self.width}, heads={self.heads}, grid={self.grid}, "
                f"selectors={self.selectors}, depth={self.depth}."
            )
        if self.window_seconds < STEP_SECONDS:
            raise UserError(f"the sparsesync reranker's window_seconds must be at least "
                            f"{STEP_SECONDS} s, got {self.window_seconds}.")

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * SAMPLE_RATE)

    @property
    def visual_steps(self) -> int:
        """Visual steps per window (5 s at 25 fps: 125 frames → 16)."""
        return num_features(round(self.window_seconds * FPS))


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


def sync_properties(config: SparseSyncConfig) -> dict:
    """The reranker's attributes, known without building it (``ComponentSpec.properties``)."""
    return {"sample_rate": SAMPLE_RATE,
            "video_streams": {config.video_stream: config.grid * config.grid * S3D_DIM}}


def sparsesync_pretrained_files(config) -> list:
    """Nothing to download (see ``ComponentSpec.pretrained_files``): no library publishes
    these weights; ``weights: pretrained`` is refused as building refuses it.
    (The visual encoder and the reranker read the same file.)"""
    return nothing_to_download(config.weights,
                               lambda weights: sparsesync_file(weights, "SparseSync"))


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="visual_encoder", name="sparsesync", build=SparseSyncVisualEncoder,
        config=SparseSyncVisualConfig, requires=("torchvision",), install="pip install 'v2a[s3d]'",
        properties=visual_properties, pretrained_files=sparsesync_pretrained_files,
        description="SparseSync's S3D feature maps (7 x 7 x 1024 per step), fps / 8 per second",
    ))
    register(ComponentSpec(
        kind="reranker", name="sparsesync", build=SparseSync, config=SparseSyncConfig,
        requires=("torchvision",), install="pip install 'v2a[s3d]'", properties=sync_properties,
        pretrained_files=sparsesync_pretrained_files,
        description="SparseSync (Iashin et al. 2022): 21 offset classes, score -|offset|",
    ))
