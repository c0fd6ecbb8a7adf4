"""ImageBind-Huge's vision tower as a v2a :class:`~v2a.interfaces.VisualEncoder` (plug-in
``imagebind``), and the transformer parts it shares with the audio tower
(:mod:`v2a_plugins.audio_encoders.imagebind`).

ImageBind (Girdhar et al., "ImageBind: One Embedding Space To Bind Them All", 2023) maps
images, audio and other modalities into one 1024-d space. Together with the ``imagebind`` audio
encoder this tower gives evaluation's IB-score, the cosine of a clip's audio and video
embeddings. The model is written here from the paper and its public description (the reference
code is CC BY-NC-SA 4.0, so none of it is used); its parameter names are those of the released
checkpoint, so the file loads as it is.

Pipeline, per frame ``[3, h, w]`` in [0, 1]::

    resize (shortest side to 224, bicubic, antialiased), ``crops`` crops of 224 x 224,
    normalise (CLIP's mean and std) --(repeated to 2 frames, as ImageBind treats an image; or,
    with frame_pairs, the frame and the next one)--> [3, 2, 224, 224]
    --(Conv3d 2x14x14 stride 2x14x14, no bias)--> 256 patches of 1280 --(cls token, learnt
    positions [1, 257, 1280], LayerNorm)--> 32 pre-LN blocks (16 heads, MLP 5120)
    --(LayerNorm, cls token, Linear 1280 -> 1024 without bias, L2 normalisation)--> [1024]

``encode(frames [b, t, 3, h, w], times [t])`` → ``[b, t, 1024]``, one unit embedding per frame at
``rate = fps`` from ``times[0]``. With ``crops: 3`` a step is the mean of the unit embeddings of
the left, centre and right crops (top, centre, bottom for portrait frames); with
``frame_pairs`` step ``i`` embeds frames ``i`` and ``i + 1`` as a two-frame clip (``t - 1``
steps, starting half a frame after ``times[0]``).

**av-benchmark's IB-score** (github.com/hkchengrex/av-benchmark, the field's reference) samples
the video at 0.5 frames per second (4 frames for 8 s), resizes the shortest side to 224, takes
three spatial crops, embeds each pair of consecutive frames as a two-frame clip and averages all
these unit embeddings into one per video; the score is their cosine with the audio embedding.
``fps: 0.5, crops: 3, frame_pairs: true`` reproduce that: the mean over time of this encoder's
steps is then proportional to av-benchmark's video embedding. ``fps`` defaults to 0.5; the
defaults ``crops: 1`` and ``frame_pairs: false`` are ImageBind's own image path (one centre-crop
embedding per frame).

Weights (``weights``): ``none`` (random), or the local path of ``imagebind_huge.pth``
(:data:`CHECKPOINT_URL`, 4.8 GB, all six modalities in one bare state dict); this tower loads
the ``modality_*.vision.*`` keys and ignores the rest, so the audio encoder can read the same
file. A state dict of this component (the same key names) loads too. ``pretrained`` says where
to download the file (nothing is downloaded here). **Licence: the ImageBind weights are CC
BY-NC-SA 4.0, for non-commercial use only.**

Key layout (confirmed by building the reference model on the meta device, see
``.briefs/eval-deps.md``): ``modality_preprocessors.vision.cls_token [1, 1, 1280]``,
``.rgbt_stem.proj.1.weight [1280, 3, 2, 14, 14]``, ``.pos_embedding_helper.pos_embed
[1, 257, 1280]``; ``modality_trunks.vision.pre_transformer_layer.0.*`` (LayerNorm),
``.blocks.{0..31}.attn.{in_proj_weight [3840, 1280], in_proj_bias, out_proj.*}``,
``.norm_1.*``, ``.norm_2.*``, ``.mlp.fc1.* [5120, 1280]``, ``.mlp.fc2.*``;
``modality_heads.vision.0.*`` (LayerNorm), ``modality_heads.vision.2.weight [1024, 1280]``.
Layer norms use eps 1e-6 in the trunk and head (inferred from the public description: the
value is not in the state dict). Drop-path and other training-only parts are left out; the tower
is frozen (no gradients) and starts in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import nothing_to_download
from v2a.schema import FieldError
from v2a.weights import downloaded_file

CHECKPOINT = "imagebind_huge.pth"
CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
#: How the weights option's refusal describes the file.
CHECKPOINT_TEXT = f"{CHECKPOINT} (4.8 GB; CC BY-NC-SA 4.0, non-commercial use only)"
EMBED_DIM = 1024  # the joint embedding space
TRUNK_EPS = 1e-6  # layer norms of the trunks and heads
MODULE_GROUPS = ("modality_preprocessors", "modality_trunks", "modality_heads",
                 "modality_postprocessors")
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's pixel statistics, as ImageBind uses
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


# -- the vision tower ----------------------------------------------------------------------------


@dataclass
class ImageBindVisionConfig:
    """Options of the ``imagebind`` visual encoder; the defaults are ImageBind-Huge.

    ``fps``: frames (and steps) per second, 0.5 as av-benchmark samples. ``crops``: 1 (centre)
    or 3 (left, centre, right) crops per frame, averaged. ``frame_pairs``: embed consecutive
    frames as two-frame clips (av-benchmark) instead of each frame repeated. ``batch_frames``:
    images per forward pass. The rest shapes the tower (smaller sizes for tests).
    """

    weights: str = "none"
    """none (random) or the path of imagebind_huge.pth (or this tower's state dict)"""
    fps: float = 0.5
    """frames (and steps) per second, 0.5 as av-benchmark samples"""
    crops: int = 1
    """crops per frame, averaged: 1 (centre) or 3 (left, centre, right)"""
    frame_pairs: bool = False
    """embed consecutive frames as two-frame clips (av-benchmark) instead of each frame repeated"""
    batch_frames: int = 16
    """images per forward pass"""
    image_size: int = 224
    """side of the square input images"""
    patch_size: int = 14
    """side of the square patches (must divide image_size)"""
    width: int = 1280
    """transformer width"""
    depth: int = 32
    """transformer blocks"""
    heads: int = 16
    """attention heads (must divide width)"""
    embed_dim: int = EMBED_DIM
    """width of the joint ImageBind embedding the tower projects to"""

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise FieldError("fps", f"must be positive, got {self.fps}")
        if self.crops not in (1, 3):
            raise FieldError("crops", f"must be 1 or 3, got {self.crops}")
        for name in ("batch_frames", "image_size", "patch_size", "width", "depth", "heads", "embed_dim"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be a positive integer, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise FieldError("patch_size", f"must divide image_size {self.image_size}, got {self.patch_size}")
        if self.width % self.heads:
            raise FieldError("heads", f"must divide width {self.width}, got {self.heads}")


def vision_text(config: ImageBindVisionConfig) -> str:
    return (f"(image_size {config.image_size}, patch_size {config.patch_size}, width {config.width}, "
            f"depth {config.depth}, embed_dim {config.embed_dim})")


def vision_properties(config: ImageBindVisionConfig) -> dict:
    """The encoder attributes ``config`` gives, without building it (``ComponentSpec.properties``)."""
    size = (config.image_size, config.image_size) if config.crops == 1 else None
    return {"fps": float(config.fps), "rate": float(config.fps), "dim": config.embed_dim,
            "frame_size": size}


def imagebind_pretrained_files(config) -> list:
    """Nothing to download (see ``ComponentSpec.pretrained_files``): no library publishes
    these weights; ``weights: pretrained`` is refused as building refuses it.
    (Both towers, audio and vision, read the same file.)"""
    return nothing_to_download(config.weights, lambda weights: downloaded_file(
        weights, model="ImageBind-Huge", file=CHECKPOINT_TEXT, page=CHECKPOINT_URL))


def build_encoder(config: ImageBindVisionConfig):
    """The :class:`ImageBindVisionEncoder` of ``config`` (its module, and torch, load on first
    use)."""
    from v2a_plugins.visual_encoders.imagebind_model import ImageBindVisionEncoder  # deferred: torch (the tower)

    return ImageBindVisionEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="visual_encoder", name="imagebind", build=build_encoder,
        config=ImageBindVisionConfig, properties=vision_properties,
        pretrained_files=imagebind_pretrained_files,
        description="ImageBind-Huge vision tower (Girdhar 2023): 1024-d unit embedding per "
                    "frame, for IB-score; local checkpoint, non-commercial licence",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.visual_encoders.imagebind_model` on first use.
_HOMES = {"v2a_plugins.visual_encoders.imagebind_model": (
    "Block", "FirstToken", "ImageBindVisionEncoder", "PositionTable", "Preprocessor",
    "RepeatFrames", "Stem", "Trunk", "attach_tower", "attach_vision_tower", "head",
    "modality_state", "resize_shortest", "spatial_crops", "tower_head")}
__all__ = ["CHECKPOINT", "CHECKPOINT_TEXT", "CHECKPOINT_URL", "EMBED_DIM", "IMAGE_MEAN",
           "IMAGE_STD", "MODULE_GROUPS", "TRUNK_EPS", "ImageBindVisionConfig", "build_encoder",
           "imagebind_pretrained_files", "vision_properties", "vision_text",
           *_HOMES["v2a_plugins.visual_encoders.imagebind_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
