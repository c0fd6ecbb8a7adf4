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

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from v2a import ComponentSpec, hookimpl
from v2a.errors import UserError
from v2a.lazy import lazy_exports
from v2a.pretrained import nothing_to_download
from v2a.weights import downloaded_file
from v2a_plugins.visual_encoders.s3d import DIM as S3D_DIM
from v2a_plugins.visual_encoders.s3d import STRIDE, num_features

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


def visual_properties(config: SparseSyncVisualConfig) -> dict:
    """The visual encoder's attributes, known without building it (``ComponentSpec.properties``)."""
    return {"fps": float(config.fps), "rate": config.fps / STRIDE,
            "frame_size": (config.crop, config.crop),
            "dim": grid_side(config.crop) ** 2 * S3D_DIM}


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


def build_visual_encoder(config: SparseSyncVisualConfig):
    """The ``sparsesync`` visual encoder of ``config`` (its module, torch and torchvision
    imported on first use)."""
    from v2a_plugins.rerankers.sparsesync_model import SparseSyncVisualEncoder  # deferred: torch
    return SparseSyncVisualEncoder(config)


def build_sparsesync(config: SparseSyncConfig):
    """The ``sparsesync`` reranker of ``config`` (its module, and torch, imported on first use)."""
    from v2a_plugins.rerankers.sparsesync_model import SparseSync  # deferred: torch
    return SparseSync(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="visual_encoder", name="sparsesync", build=build_visual_encoder,
        config=SparseSyncVisualConfig, requires=("torchvision",), install="pip install 'v2a[s3d]'",
        properties=visual_properties, pretrained_files=sparsesync_pretrained_files,
        description="SparseSync's S3D feature maps (7 x 7 x 1024 per step), fps / 8 per second",
    ))
    register(ComponentSpec(
        kind="reranker", name="sparsesync", build=build_sparsesync, config=SparseSyncConfig,
        requires=("torchvision",), install="pip install 'v2a[s3d]'", properties=sync_properties,
        pretrained_files=sparsesync_pretrained_files,
        description="SparseSync (Iashin et al. 2022): 21 offset classes, score -|offset|",
    ))


#: The implementation's names, importable from here; imported from their module on first use.
_HOMES = {"v2a_plugins.rerankers.sparsesync_model": (
    "Attention", "AudioResNet", "CrossBlock", "EncoderBlock", "Selector", "SparseSync",
    "SparseSyncVisualEncoder", "SyncTransformer", "holder", "log_spectrogram", "mlp",
    "split_width", "window_starts",
)}
__all__ = ["AUDIO_DIM", "CHECKPOINT", "FPS", "HOP", "LOG_FLOOR", "MAX_OFFSET", "NORM_EPS",
           "NUM_OFFSETS", "N_FFT", "PAGE", "RESIZE", "SAMPLE_RATE", "STEP_SECONDS",
           "WINDOW_SECONDS", "Score", "SparseSyncConfig", "SparseSyncVisualConfig",
           "build_sparsesync", "build_visual_encoder", "grid_side", "halvings",
           "sparsesync_file", "sparsesync_pretrained_files", "sync_properties",
           "v2a_register_components", "visual_properties",
           *_HOMES["v2a_plugins.rerankers.sparsesync_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
