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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange, reduce
from torch import Tensor

from v2a import ComponentSpec, FeatureSequence, VisualEncoder, hookimpl
from v2a.pretrained import PretrainedFile, torch_hub_file
from v2a.sequences import first_frame_time
from v2a.weights import (
    PRETRAINED,
    WeightsError,
    is_random,
    load_checkpoint,
    load_into,
    local_file,
)

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


def resize_and_crop(images: Tensor, side: int) -> Tensor:
    """``images: [n, 3, h, w]`` → ``[n, 3, side, side]``: shortest side to ``side``, centre crop."""
    h, w = images.shape[-2:]
    if (h, w) == (side, side):
        return images
    scale = side / min(h, w)
    new = (max(side, int(h * scale)), max(side, int(w * scale)))
    images = torch.nn.functional.interpolate(
        images, size=new, mode="bilinear", antialias=True, align_corners=False
    )
    top, left = round((new[0] - side) / 2), round((new[1] - side) / 2)
    return images[..., top : top + side, left : left + side]


# -- checkpoints ------------------------------------------------------------------------------------

#: kylemin's module names → torchvision's positions: ``SepConv3d`` is torchvision's
#: ``TemporalSeparableConv`` (spatial then temporal ``Conv3dNormActivation``), ``BasicConv3d`` is
#: one ``Conv3dNormActivation`` (conv at 0, BatchNorm at 1).
_KYLEMIN_NAMES = {"conv_s": "0.0", "bn_s": "0.1", "conv_t": "1.0", "bn_t": "1.1", "conv": "0", "bn": "1"}


def kylemin_to_torchvision(key: str) -> str | None:
    """A kylemin/SparseSync S3D key as torchvision's, or ``None`` for the classifier.

    ``base.5.branch1.1.conv_t.weight`` → ``features.5.branch1.1.1.0.weight``. In kylemin's
    inception blocks ``branch0`` is a ``Sequential`` holding one ``BasicConv3d``; in torchvision
    it is the ``Conv3dNormActivation`` itself, so its ``.0`` goes.
    """
    parts = key.split(".")
    if parts[0] != "base":
        return None
    parts[0] = "features"
    if len(parts) > 3 and parts[2] == "branch0" and parts[3] == "0":
        del parts[3]
    return ".".join(_KYLEMIN_NAMES.get(part, part) for part in parts)


def _unwrap(checkpoint):
    """The state dict inside a training checkpoint (``{"model": …}``, ``{"state_dict": …}``)."""
    while isinstance(checkpoint, Mapping):
        inner = [checkpoint[k] for k in ("state_dict", "model") if isinstance(checkpoint.get(k), Mapping)]
        if not inner or any(isinstance(v, Tensor) for v in checkpoint.values()):
            return checkpoint
        checkpoint = inner[0]
    return checkpoint


def backbone_state(checkpoint, path) -> dict[str, Tensor]:
    """torchvision ``features.…`` tensors from a torchvision or SparseSync-style checkpoint."""
    state = _unwrap(checkpoint)
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds no state dict, so it is not an S3D checkpoint")
    for anchor, convert in ((TORCHVISION_ANCHOR, None), (KYLEMIN_ANCHOR, kylemin_to_torchvision)):
        found = [k for k in state if isinstance(k, str) and (k == anchor or k.endswith("." + anchor))]
        if found:
            prefix = found[0][: -len(anchor)]  # "" or e.g. "vfeat_extractor."
            break
    else:
        raise WeightsError(
            f"{path} has neither torchvision's S3D keys ({TORCHVISION_ANCHOR!r}) nor "
            f"SparseSync/kylemin's ({KYLEMIN_ANCHOR!r}), so it is not an S3D checkpoint"
        )
    out = {}
    for key, value in state.items():
        if not (isinstance(key, str) and key.startswith(prefix) and isinstance(value, Tensor)):
            continue
        key = key[len(prefix):]
        key = convert(key) if convert else key
        if key is not None and key.startswith("features."):
            out[key] = value
    return out


# -- building ---------------------------------------------------------------------------------------


def build_s3d(weights: str) -> torch.nn.Module:
    """torchvision's S3D with the weights ``weights`` names (classifier included)."""
    from torchvision.models.video import S3D_Weights, s3d

    model = s3d(weights=None)
    if is_random(weights):
        for module in model.modules():
            if isinstance(module, torch.nn.Conv3d):  # keep the activations' scale through the stack
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        return model
    if weights.strip().lower() == PRETRAINED:
        try:
            state = S3D_Weights.KINETICS400_V1.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:
            raise WeightsError(
                f"could not download torchvision's S3D Kinetics-400 weights "
                f"({type(exc).__name__}: {exc}); connect to the internet once (torchvision "
                f"caches them), or download {S3D_Weights.KINETICS400_V1.url} and give its path "
                "as the weights option"
            ) from None
        model.load_state_dict(state)
        return model
    path = local_file(
        weights, what="the S3D encoder",
        hint="A torchvision state dict or SparseSync's S3D_kinetics400_torchified.pt both work.",
    )
    state = backbone_state(load_checkpoint(path), path)
    load_into(model.features, {k.removeprefix("features."): v for k, v in state.items()}, path,
              "torchvision's S3D")
    return model


# -- the encoder ------------------------------------------------------------------------------------


class S3DEncoder(VisualEncoder):
    """torchvision's S3D backbone behind the :class:`~v2a.interfaces.VisualEncoder` contract.

    ``encode``: frames ``[b, t, 3, h, w]`` in [0, 1] at ``fps`` with ``times: [t]`` →
    ``[b, floor(ceil(t / 4) / 2), 1024]`` at ``fps / 8`` from ``times[0] + 2 / fps``.
    """

    def __init__(self, config: S3DConfig):
        super().__init__()
        from torchvision.models.video import S3D_Weights

        self.config = config
        self.features = build_s3d(config.weights).features  # the pooling and classifier go
        self.features.requires_grad_(False)  # a frozen feature extractor

        if config.normalise == "kinetics":
            kinetics = S3D_Weights.KINETICS400_V1.transforms()
            stats = (tuple(kinetics.mean), tuple(kinetics.std))
        else:
            stats = IMAGENET if config.normalise == "imagenet" else IDENTITY
        self.register_buffer("mean", torch.tensor(stats[0]).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(stats[1]).view(3, 1, 1), persistent=False)

        self.fps = float(config.fps)
        self.rate = self.fps / STRIDE
        self.frame_size = (config.crop, config.crop)
        self.dim = DIM
        self.eval()

    def train(self, mode: bool = True) -> S3DEncoder:
        """Frozen: the BatchNorm layers keep their pre-trained statistics in any mode."""
        super().train(mode)
        self.features.eval()
        return self

    def encode(self, frames: Tensor, times: Tensor) -> FeatureSequence:
        """``frames: [b, t, 3, h, w]``, ``times: [t]`` s → ``[b, t', 1024]`` at ``fps / 8``."""
        b, t = frames.shape[:2]
        start = first_frame_time(times, t) + FIRST_CENTRE / self.fps
        frames = frames.to(self.mean.dtype)
        if t < STRIDE:  # too short for S3D's strides: repeat the last frame
            frames = torch.cat([frames, frames[:, -1:].expand(-1, STRIDE - t, -1, -1, -1)], dim=1)
        images = rearrange(frames, "b t c h w -> (b t) c h w")
        images = (resize_and_crop(images, self.config.crop) - self.mean) / self.std
        video = rearrange(images, "(b t) c h w -> b c t h w", b=b)
        feature_map = self.features(video)  # [b, 1024, t', h / 32, w / 32]
        values = reduce(feature_map, "b d t h w -> b t d", "mean")
        return FeatureSequence(values=values, rate=self.rate, start=start)


def s3d_pretrained_files(config: S3DConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``):
    torchvision's ``S3D_Weights.KINETICS400_V1``, kept in torch.hub's checkpoint folder and
    checked by the SHA-256 prefix in its file name; its size is torchvision's own record
    (``meta["_file_size"]``, in MiB to three decimals: the state dict alone is 33.4 × 10⁶ bytes)."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    from torchvision.models.video import S3D_Weights

    weights = S3D_Weights.KINETICS400_V1
    mebibytes = weights.meta.get("_file_size")
    return [torch_hub_file(
        what="S3D Kinetics-400 weights (torchvision)", url=weights.url, check_hash=True,
        source=f"torchvision S3D_Weights.KINETICS400_V1 ({weights.url})",
        size=round(mebibytes * 2**20) if mebibytes else None,
        licence="BSD-3-Clause (torchvision; its weights may carry the training data's terms)")]


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="visual_encoder", name="s3d", build=S3DEncoder, config=S3DConfig,
        requires=("torchvision",), install="pip install 'v2a[s3d]'", properties=s3d_properties,
        pretrained_files=s3d_pretrained_files,
        description="S3D features before pooling (torchvision, Kinetics-400), fps / 8 per second",
    ))
