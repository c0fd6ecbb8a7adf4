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

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.errors import UserError
from v2a.lazy import lazy_exports
from v2a.pretrained import nothing_to_download
from v2a.weights import PRETRAINED, WeightsError, load_checkpoint, local_file

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


# -- checkpoints -----------------------------------------------------------------------------------


def synchformer_file(weights: str, what: str):
    """The checkpoint file ``weights`` names, read safely (refusing ``pretrained``)."""
    if weights.strip().lower() == PRETRAINED:
        raise WeightsError(f"{what} is not downloaded by v2a. {PRETRAINED_HINT}")
    path = local_file(weights, what=what, hint=PRETRAINED_HINT)
    return path, load_checkpoint(path)


def synchformer_pretrained_files(config) -> list:
    """Nothing to download (see ``ComponentSpec.pretrained_files``): no library publishes
    these weights; ``weights: pretrained`` is refused as building refuses it.
    (The visual tower and the reranker read the same file.)"""
    return nothing_to_download(config.weights,
                               lambda weights: synchformer_file(weights, "Synchformer"))


def build_encoder(config: SynchformerVisualConfig):
    """The :class:`SynchformerVisualEncoder` of ``config`` (its module, and torch, load on first
    use)."""
    from v2a_plugins.visual_encoders.synchformer_model import SynchformerVisualEncoder  # deferred: torch (the tower)

    return SynchformerVisualEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="visual_encoder", name="synchformer", build=build_encoder,
        config=SynchformerVisualConfig, properties=synchformer_visual_properties,
        pretrained_files=synchformer_pretrained_files,
        description="Synchformer's Motionformer tower: 8 vectors per 0.64 s segment, fps / 8",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.visual_encoders.synchformer_model` on first use.
_HOMES = {"v2a_plugins.visual_encoders.synchformer_model": (
    "CLSAggregator", "DividedAttention", "DividedSpaceTimeBlock", "Mlp", "MotionformerTower",
    "SynchformerVisualEncoder", "checkpoint_part", "segment_times", "split_segments")}
__all__ = ["MEAN", "PRETRAINED_HINT", "SEGMENT_FRAMES", "SEGMENT_STEP", "STD", "TOKENS_PER_SEGMENT",
           "TUBELET", "VISUAL_PREFIX", "SynchformerVisualConfig", "build_encoder", "num_segments",
           "synchformer_file", "synchformer_pretrained_files", "synchformer_visual_properties",
           *_HOMES["v2a_plugins.visual_encoders.synchformer_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
