"""S3D clip features as a v2a :class:`~v2a.interfaces.VisualEncoder` (plug-in ``s3d``).

MaskVAT's alignment-sensitive stream: the S3D backbone of SparseSync (Iashin et al. 2022), here
torchvision's ``torchvision.models.video.s3d`` (the same architecture). The feature map before
pooling, ``features(x): [b, 1024, t', h / 32, w / 32]``, is mean-pooled over space into
``[b, t', 1024]`` at ``rate = fps / 8``.

* **Defaults** (*assumed*, not stated in the paper as we have it): 25 fps (``fps``) and
  224 x 224 centre crops (``crop``), SparseSync's input.
* **Time** (measured on torchvision's implementation). The time axis is downsampled by the
  kernel-7 stride-2 stem conv (padding 3), a kernel-3 stride-2 max pool (padding 1) and a
  kernel-2 stride-2 max pool (no padding); every other temporal kernel is 3 with padding 1. So
  ``t`` frames give ``t' = floor(ceil(t / 4) / 2)`` features (16 → 2, 13 → 2, 12 → 1, 125 → 16),
  and feature ``n`` pools the stem outputs centred on frames ``8n - 2, 8n, …, 8n + 6``: its
  receptive field is frames ``8n - 49 … 8n + 53``, centred on frame ``8n + 2`` (not
  ``8n + 3.5``: the padding sits at the start). ``start`` is therefore ``times[0] + 2 / fps``,
  and feature ``n`` describes ``start + n / rate``. Feature ``n`` exists when frame ``8n + 4``
  does, so up to 4 trailing frames get no feature of their own (they still feed the last one).
* **Short clips**: torchvision's S3D fails on fewer than 5 frames. A clip of fewer than 8
  frames is padded to 8 by repeating its last frame, giving one feature.
* **Preprocessing**: frames of another size than ``crop`` are resized (bilinear, antialiased;
  the shortest side to ``crop``) and centre-cropped. ``normalise`` picks the input statistics
  the weights expect: ``"kinetics"`` (torchvision's Kinetics-400 weights, the mean/std of their
  ``S3D_Weights.KINETICS400_V1.transforms()``), ``"imagenet"`` (SparseSync's training
  pipeline) or ``"none"`` (inputs in [0, 1]: kylemin's original weights, as video_features
  uses them).
* **Weights** (``weights``): ``"pretrained"`` is torchvision's ``S3D_Weights.KINETICS400_V1``
  (its own download-and-cache); ``"none"`` is random initialisation, He-normal for the convs
  (PyTorch's default init shrinks the activations of this deep stack to ~1e-7, which makes
  random features useless even as a stand-in); a path names a local file
  read with :func:`v2a.weights.load_checkpoint` (safetensors or weights-only torch, never code)
  holding either a torchvision state dict (``features.…``, ``classifier.…``) or a
  SparseSync-style one: kylemin's S3D as SparseSync, Synchformer and video_features ship it
  (``S3D_kinetics400_torchified.pt``: ``base.…``, ``fc.0.…``), also nested in a training
  checkpoint (``{"model": …}`` / ``{"state_dict": …}``) under a prefix such as
  ``vfeat_extractor.`` or ``module.v_encoder.``. The source key names come from the kylemin
  S3D module as vendored in v-iashin/video_features and v-iashin/Synchformer (``SepConv3d``:
  ``conv_s``/``bn_s``/``conv_t``/``bn_t``; ``BasicConv3d``: ``conv``/``bn``; ``Mixed_*``:
  ``branch0..3``); SparseSync's own copy imports the same class (``S3D(num_class=400, …)``
  with ``self.base``) but its source file was not available to check line by line.
  The classifier (``fc`` / ``classifier``) is not kept.
* **Frozen**: parameters do not require grad, and the BatchNorm layers stay in eval mode even
  under ``train()``, so a trainer that calls ``train()`` on everything cannot overwrite the
  pre-trained statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import PretrainedFile, torch_hub_file
from v2a.weights import PRETRAINED

#: Frames per feature step.
STRIDE = 8
#: Frame index (from the clip's first frame) of the centre of feature 0's receptive field.
FIRST_CENTRE = 2
#: Input statistics the published weights expect.
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
#: Keys that locate the backbone in a checkpoint, by layout.
TORCHVISION_ANCHOR = "features.0.0.0.weight"
KYLEMIN_ANCHOR = "base.0.conv_s.weight"


@dataclass
class S3DConfig:
    """Options of the ``s3d`` visual encoder.

    ``weights``: ``"pretrained"`` (torchvision's Kinetics-400), ``"none"`` or a local file.
    ``fps``: the input frame rate (25 *assumed*); features come at ``fps / 8``. ``crop``: the
    side of the square frames it wants (224 *assumed*). ``normalise``: the input statistics the
    weights expect (see the module docstring).
    """

    weights: str = PRETRAINED
    """pretrained (torchvision's Kinetics-400), none (random) or the path of a file"""
    fps: float = 25.0
    """input frame rate (25 assumed); features come at fps / 8"""
    crop: int = 224
    """side of the square frames it reads (224 assumed)"""
    normalise: Literal["kinetics", "imagenet", "none"] = "kinetics"
    """the input statistics the weights expect"""

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.crop < 1:
            raise ValueError(f"crop must be a positive integer, got {self.crop}")


#: Width of the features: S3D's last inception block has 1024 channels.
DIM = 1024


def s3d_properties(config: S3DConfig) -> dict:
    """The attributes of the encoder ``config`` builds, known without building it
    (``ComponentSpec.properties``)."""
    return {"fps": float(config.fps), "rate": config.fps / STRIDE,
            "frame_size": (config.crop, config.crop), "dim": DIM}


# -- helpers ----------------------------------------------------------------------------------------


def num_features(num_frames: int) -> int:
    """Feature steps S3D gives for ``num_frames`` frames (after padding short clips to 8)."""
    t = max(num_frames, STRIDE)
    return -(-t // 4) // 2


def s3d_pretrained_files(config: S3DConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``):
    torchvision's ``S3D_Weights.KINETICS400_V1``, kept in torch.hub's checkpoint folder and
    checked by the SHA-256 prefix in its file name; its size is torchvision's own record
    (``meta["_file_size"]``, in MiB to three decimals: the state dict alone is 33.4 × 10⁶ bytes)."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    from torchvision.models.video import S3D_Weights  # deferred: torch (torchvision)

    weights = S3D_Weights.KINETICS400_V1
    mebibytes = weights.meta.get("_file_size")
    return [torch_hub_file(
        what="S3D Kinetics-400 weights (torchvision)", url=weights.url, check_hash=True,
        source=f"torchvision S3D_Weights.KINETICS400_V1 ({weights.url})",
        size=round(mebibytes * 2**20) if mebibytes else None,
        licence="BSD-3-Clause (torchvision; its weights may carry the training data's terms)")]


def build_encoder(config: S3DConfig):
    """The :class:`S3DEncoder` of ``config`` (its module, and torch, load on first use)."""
    from v2a_plugins.visual_encoders.s3d_model import S3DEncoder  # deferred: torch (the network)

    return S3DEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="visual_encoder", name="s3d", build=build_encoder, config=S3DConfig,
        requires=("torchvision",), install="pip install 'v2a[s3d]'", properties=s3d_properties,
        pretrained_files=s3d_pretrained_files,
        description="S3D features before pooling (torchvision, Kinetics-400), fps / 8 per second",
    ))


#: The implementation's public names, imported from :mod:`v2a_plugins.visual_encoders.s3d_model`
#: on first use.
_HOMES = {"v2a_plugins.visual_encoders.s3d_model": (
    "S3DEncoder", "backbone_state", "build_s3d", "kylemin_to_torchvision", "resize_and_crop")}
__all__ = ["DIM", "FIRST_CENTRE", "IDENTITY", "IMAGENET", "KYLEMIN_ANCHOR", "STRIDE",
           "TORCHVISION_ANCHOR", "S3DConfig", "build_encoder", "num_features",
           "s3d_pretrained_files", "s3d_properties", *_HOMES["v2a_plugins.visual_encoders.s3d_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
