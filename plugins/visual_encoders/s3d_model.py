"""The ``s3d`` visual encoder's implementation: :class:`S3DEncoder`, building torchvision's S3D
and reading its checkpoints (torch, torchvision).

The plug-in's documentation, options and registration are in
:mod:`v2a_plugins.visual_encoders.s3d`, which imports this module the first time an encoder is
built.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from einops import rearrange, reduce
from torch import Tensor

from v2a import FeatureSequence, VisualEncoder
from v2a.sequences import first_frame_time
from v2a.weights import PRETRAINED, WeightsError, is_random, load_checkpoint, load_into, local_file
from v2a_plugins.visual_encoders.s3d import (DIM, FIRST_CENTRE, IDENTITY, IMAGENET, KYLEMIN_ANCHOR,
                                             STRIDE, TORCHVISION_ANCHOR, S3DConfig)

# -- helpers ----------------------------------------------------------------------------------------


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
