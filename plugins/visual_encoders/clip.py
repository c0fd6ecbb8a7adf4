"""CLIP image embeddings, one per video frame, as a v2a :class:`~v2a.interfaces.VisualEncoder`
(plug-in ``clip``).

MaskVAT's semantic stream: the image embedding of a CLIP ViT-B/32 for every frame. The model is
open_clip's own vision tower (``open_clip.create_model(...).visual``); this module decides where
its weights come from, preprocesses frames in torch, and speaks v2a's tensor contracts.

* **Rate** (``fps``): 8 frames per second, so 8 features per second. *Assumed*: the paper's
  frame rate for CLIP is not stated in what we have; 8 fps is our default, not a known value.
* **Weights** (``weights``): ``"pretrained"`` loads the ``pretrained`` tag (``"openai"``) through
  open_clip's own download-and-cache; a path names a local file, read with
  :func:`v2a.weights.load_checkpoint` (safetensors or a weights-only torch file, never code):
  a full open_clip/OpenAI CLIP state dict (keys ``visual.…``; the text tower's keys are ignored),
  an open_clip training checkpoint (``{"state_dict": {"module.visual.…"}}``), or the vision
  tower's own state dict; ``"none"`` is random initialisation. OpenAI's original TorchScript
  archives (``ViT-B-32.pt`` from openaipublic) are refused: they only load by running code.
* **QuickGELU** (``quick_gelu``): the OpenAI and several LAION ViT-B-32 weights were trained with
  QuickGELU, which open_clip's ``ViT-B-32`` config does not use. ``None`` follows the
  ``pretrained`` tag (its record in open_clip says which), also when the weights come from a
  local file: ``pretrained`` names where the weights came from.
* **Preprocessing**: the model's own, done in torch on the batch, so any frame size works:
  resize (bicubic, antialiased; shortest side to ``image_size`` for CLIP), centre crop,
  normalise with the model's mean/std. ``frame_size`` is ``(image_size, image_size)``: callers
  that resize and crop to it first skip the resize.
* **Small towers** (``image_size``, ``patch_size``, ``width``, ``layers``, ``heads``,
  ``embed_dim``): override the named open_clip config, for tests and experiments with random or
  local weights.
* **Memory**: only the vision tower is kept (the text tower is dropped after construction), and
  frames go through it ``batch_frames`` at a time.
* **Frozen**: a pre-trained feature extractor: parameters do not require grad and the component
  starts in eval mode.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from v2a import ComponentSpec, FeatureSequence, VisualEncoder, hookimpl
from v2a.errors import UserError, suggestion
from v2a.pretrained import PretrainedFile, hub_file
from v2a.sequences import first_frame_time
from v2a.weights import (
    PRETRAINED,
    WeightsError,
    is_random,
    load_checkpoint,
    load_into,
    local_file,
)

#: A minimal text tower for models whose text tower is discarded at once (open_clip builds both).
_UNUSED_TEXT_TOWER = dict(context_length=1, vocab_size=1, width=8, heads=1, layers=1)
#: The vision-tower options that override the named config.
_VISION_FIELDS = ("image_size", "patch_size", "width", "layers")


@dataclass
class ClipConfig:
    """Options of the ``clip`` visual encoder.

    ``model``: an open_clip model name (``open_clip.list_models()``). ``pretrained``: an open_clip
    pretrained tag for that model (``open_clip.list_pretrained_tags_by_model(model)``): what
    ``weights: pretrained`` downloads, and the weights' provenance for ``quick_gelu``.
    ``weights``: ``"pretrained"``, ``"none"`` or a local file. ``fps``: frames (and features) per
    second, 8 *assumed*. ``batch_frames``: frames per forward pass. ``normalize``: L2-normalise
    each embedding. ``quick_gelu``: ``None`` follows the ``pretrained`` tag. The remaining fields
    (``None``: the named config's value) shape a vision tower for random or local weights;
    ``heads`` must divide ``width``.
    """

    model: str = "ViT-B-32"
    """an open_clip model name (open_clip.list_models())"""
    pretrained: str = "openai"
    """the open_clip pretrained tag that weights: pretrained downloads"""
    weights: str = PRETRAINED
    """pretrained (downloaded by open_clip), none (random) or the path of a file"""
    fps: float = 8.0
    """frames (and features) per second (8 assumed)"""
    batch_frames: int = 64
    """frames per forward pass"""
    normalize: bool = False
    """L2-normalise each embedding"""
    quick_gelu: bool | None = None
    """use QuickGELU; null: what the pretrained tag was trained with"""
    image_size: int | None = None
    """vision tower input size for random or local weights; null: the named model's"""
    patch_size: int | None = None
    """vision tower patch size; null: the named model's"""
    width: int | None = None
    """vision tower width; null: the named model's"""
    layers: int | None = None
    """vision tower layers; null: the named model's"""
    heads: int | None = None
    """vision tower attention heads (needs width, must divide it); null: the named model's"""
    embed_dim: int | None = None
    """width of the embedding; null: the named model's"""

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        for name in ("batch_frames", *_VISION_FIELDS, "heads", "embed_dim"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if self.heads is not None:
            if self.width is None:
                raise ValueError("heads needs width too (open_clip sets heads as width / head width)")
            if self.width % self.heads:
                raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")

    def vision_overrides(self) -> dict:
        """The ``vision_cfg`` entries these options change."""
        overrides = {name: getattr(self, name) for name in _VISION_FIELDS if getattr(self, name) is not None}
        if self.heads is not None:
            overrides["head_width"] = self.width // self.heads
        return overrides


#: ``(embed_dim, image_size)`` of the open_clip models most used with this encoder (their
#: ``-quickgelu`` twins have the same sizes), so that a recipe learns a CLIP stream's width
#: without importing open_clip. Another model's sizes are known only from the options.
MODEL_SIZES: dict[str, tuple[int, int]] = {
    "ViT-B-32": (512, 224), "ViT-B-16": (512, 224), "ViT-L-14": (768, 224),
    "ViT-L-14-336": (768, 336), "ViT-H-14": (1024, 224), "ViT-g-14": (1024, 224),
    "ViT-bigG-14": (1280, 224), "RN50": (1024, 224), "RN101": (512, 224), "RN50x4": (640, 288),
    "RN50x16": (768, 384), "RN50x64": (1024, 448),
}


def clip_properties(config: ClipConfig) -> dict:
    """The encoder attributes ``config`` gives, without building or importing open_clip (see
    ``ComponentSpec.properties``): ``fps`` and ``rate`` always; ``dim`` and ``frame_size``
    from the ``embed_dim`` / ``image_size`` options, else from :data:`MODEL_SIZES`."""
    props: dict = {"fps": float(config.fps), "rate": float(config.fps)}
    embed_dim, image_size = MODEL_SIZES.get(config.model.removesuffix("-quickgelu"), (None, None))
    embed_dim, image_size = config.embed_dim or embed_dim, config.image_size or image_size
    if embed_dim is not None:
        props["dim"] = embed_dim
    if image_size is not None:
        props["frame_size"] = (image_size, image_size)
    return props


# -- helpers ----------------------------------------------------------------------------------------


class _DropRandomInitNotice(logging.Filter):
    """open_clip logs "initialized randomly" when it loads no weights; ours come later."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init():
    root, notice = logging.getLogger(), _DropRandomInitNotice()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_and_crop(images: Tensor, size: tuple[int, int], *, mode: str = "shortest",
                    interpolation: str = "bicubic", fill: float = 0.0) -> Tensor:
    """``images: [n, 3, h, w]`` in [0, 1] → ``[n, 3, *size]``, as open_clip's eval transform.

    ``shortest``: the shortest side to the target (the other scaled alike, truncated as
    torchvision's ``Resize``), then a centre crop; ``squash``: straight to ``size``; ``longest``:
    the longest side to the target, then centred padding with ``fill``. Antialiased, clamped to
    [0, 1] as the 8-bit images the model was trained on are.
    """
    th, tw = size
    h, w = images.shape[-2:]
    if (h, w) == (th, tw):
        return images
    if mode == "squash":
        new = (th, tw)
    elif mode in ("shortest", "longest"):
        scale = max(th / h, tw / w) if mode == "shortest" else min(th / h, tw / w)
        new = (max(1, int(h * scale)), max(1, int(w * scale)))
        if mode == "shortest":
            new = (max(new[0], th), max(new[1], tw))
    else:
        raise UserError(f"unknown resize mode {mode!r} in the model's preprocessing config")
    antialias = interpolation in ("bilinear", "bicubic")
    images = F.interpolate(images, size=new, mode=interpolation, antialias=antialias,
                           **({} if interpolation == "nearest" else {"align_corners": False}))
    images = images.clamp(0, 1)
    if mode == "longest":
        top, left = (th - new[0]) // 2, (tw - new[1]) // 2
        return F.pad(images, (left, tw - new[1] - left, top, th - new[0] - top), value=fill)
    top, left = round((new[0] - th) / 2), round((new[1] - tw) / 2)  # torchvision's center_crop
    return images[..., top : top + th, left : left + tw]


def vision_state(checkpoint, path) -> dict[str, Tensor]:
    """The vision tower's state dict from a CLIP checkpoint in any of the accepted layouts."""
    state = checkpoint
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # an open_clip training checkpoint
    if not isinstance(state, Mapping) or not any(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors, so it is not a CLIP checkpoint")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
    if any(k.startswith("visual.") for k in state):
        return {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    return state


# -- building ---------------------------------------------------------------------------------------


def build_vision_tower(config: ClipConfig) -> tuple[torch.nn.Module, int]:
    """open_clip's vision tower for ``config`` with its weights, and its embedding width."""
    import open_clip

    named = open_clip.get_model_config(config.model)
    if named is None:
        raise UserError(
            f"open_clip has no model named {config.model!r}; "
            f"{suggestion(config.model, open_clip.list_models(), 'models')}"
        )
    tag = open_clip.get_pretrained_cfg(config.model, config.pretrained)
    kwargs: dict = {}
    vision = config.vision_overrides()
    if vision:
        kwargs["vision_cfg"] = {**named["vision_cfg"], **vision}
    if config.embed_dim is not None:
        kwargs["embed_dim"] = config.embed_dim
    quick_gelu = config.quick_gelu if config.quick_gelu is not None else tag.get("quick_gelu")
    if quick_gelu:
        kwargs["force_quick_gelu"] = True  # before open_clip's check of the tag, which then agrees
    elif quick_gelu is not None:
        kwargs["quick_gelu"] = False

    if config.weights.strip().lower() == PRETRAINED:
        if kwargs.keys() & {"vision_cfg", "embed_dim"}:
            raise UserError(
                "image_size, patch_size, width, layers, heads and embed_dim shape a new vision "
                "tower, which the published weights do not fit; use them with weights 'none' or "
                "a local checkpoint"
            )
        model = pretrained_model(open_clip, config.model, config.pretrained, tag, kwargs)
        return model.visual, int(named["embed_dim"])

    path = None if is_random(config.weights) else local_file(
        config.weights, what=f"the CLIP {config.model} vision tower",
        hint="open_clip's open_clip_pytorch_model.bin or open_clip_model.safetensors both work.",
    )
    with _quiet_random_init():
        model = open_clip.create_model(config.model, pretrained=None, text_cfg=_UNUSED_TEXT_TOWER, **kwargs)
    visual = model.visual  # the rest of the model (text tower, logit scale) is dropped here
    if path is not None:
        state = vision_state(load_checkpoint(path), path)
        load_into(visual, state, path, f"the CLIP {config.model} vision tower")
    return visual, int(config.embed_dim or named["embed_dim"])


# -- the encoder ------------------------------------------------------------------------------------


class ClipEncoder(VisualEncoder):
    """open_clip's vision tower behind the :class:`~v2a.interfaces.VisualEncoder` contract.

    ``encode``: frames ``[b, t, 3, h, w]`` in [0, 1] with ``times: [t]`` → image embeddings
    ``[b, t, embed_dim]`` at ``rate = fps``, ``start = times[0]`` (feature ``i`` is frame ``i``).
    """

    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = config
        self.visual, self.dim = build_vision_tower(config)
        self.visual.requires_grad_(False)  # a frozen feature extractor

        pre = self.visual.preprocess_cfg  # open_clip's record of the model's eval transform
        self.image_size = _pair(pre["size"])
        self.resize_mode = pre.get("resize_mode", "shortest")
        self.interpolation = pre.get("interpolation", "bicubic")
        self.fill = float(pre.get("fill_color", 0)) / 255.0
        self.register_buffer("mean", torch.tensor(pre["mean"]).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre["std"]).view(3, 1, 1), persistent=False)

        self.fps = float(config.fps)
        self.rate = self.fps
        self.frame_size = self.image_size
        self.eval()

    def preprocess(self, images: Tensor) -> Tensor:
        """``images: [n, 3, h, w]`` in [0, 1] → the tower's input ``[n, 3, *image_size]``."""
        images = resize_and_crop(
            images, self.image_size, mode=self.resize_mode, interpolation=self.interpolation, fill=self.fill
        )
        return (images - self.mean) / self.std

    def embed(self, images: Tensor) -> Tensor:
        """``images: [n, 3, h, w]`` in [0, 1] → embeddings ``[n, dim]``, ``batch_frames`` at a time."""
        dtype = self.mean.dtype
        chunks = [
            self.visual(self.preprocess(chunk.to(dtype)))  # [chunk, dim]
            for chunk in images.split(self.config.batch_frames)
        ]
        embeddings = torch.cat(chunks)
        return F.normalize(embeddings, dim=-1) if self.config.normalize else embeddings

    def encode(self, frames: Tensor, times: Tensor) -> FeatureSequence:
        """``frames: [b, t, 3, h, w]``, ``times: [t]`` s → ``[b, t, dim]`` at ``fps`` from ``times[0]``."""
        b, t = frames.shape[:2]
        start = first_frame_time(times, t)
        images = rearrange(frames, "b t c h w -> (b t) c h w")
        values = rearrange(self.embed(images), "(b t) d -> b t d", b=b)
        return FeatureSequence(values=values, rate=self.rate, start=start)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="visual_encoder", name="clip", build=ClipEncoder, config=ClipConfig,
        requires=("open_clip", "torchvision"), install="pip install 'v2a[clip]'",
        properties=clip_properties, pretrained_files=clip_pretrained_files,
        description="CLIP image embedding per frame (open_clip; ViT-B-32 at 8 fps)",
    ))


def pretrained_model(open_clip, model: str, pretrained: str, tag, kwargs: dict):
    """open_clip's ``model`` with its published ``pretrained`` weights (``tag``: open_clip's
    pretrained config, None when it has no such tag), downloaded first so that a missing tag or
    a failed download is one sentence rather than a traceback."""
    download_pretrained(open_clip, model, pretrained, tag)
    return open_clip.create_model(model, pretrained=pretrained, **kwargs)


def _check_tag(open_clip, model: str, pretrained: str, tag) -> None:
    if not tag:
        raise UserError(
            f"open_clip has no pretrained tag {pretrained!r} for {model}; "
            f"{suggestion(pretrained, open_clip.list_pretrained_tags_by_model(model), 'tags')}"
        )


def download_pretrained(open_clip, model: str, pretrained: str, tag) -> Path:
    """open_clip's own download of the ``pretrained`` weights of ``model`` into its cache (the
    Hub's, or ``~/.cache/clip`` for a URL); the file. A failure is one sentence."""
    _check_tag(open_clip, model, pretrained, tag)
    try:
        return Path(open_clip.download_pretrained(tag))
    except Exception as exc:
        raise WeightsError(
            f"could not download the open_clip weights {model}/{pretrained} "
            f"({type(exc).__name__}: {exc}); connect to the internet once (open_clip caches "
            "them), or give a downloaded checkpoint's path as the weights option"
        ) from None


#: The file open_clip takes from a Hub repository its tag names without a file, and the
#: safetensors twin it looks for first.
_HUB_WEIGHTS, _HUB_SAFE_WEIGHTS = "open_clip_pytorch_model.bin", "open_clip_model.safetensors"


def open_clip_files(model: str, pretrained: str, *, part: str) -> list[PretrainedFile]:
    """The file open_clip downloads for ``model``/``pretrained`` (``part``: which tower uses
    it, for the description), where open_clip's ``download_pretrained`` would take it from: the
    Hub repository of the tag when huggingface_hub is installed (a ``.safetensors`` twin
    first), else its URL, cached in ``~/.cache/clip`` and checked by the SHA-256 (or prefix)
    open_clip reads from the URL."""
    import open_clip
    from open_clip.pretrained import has_hf_hub

    tag = open_clip.get_pretrained_cfg(model, pretrained)
    _check_tag(open_clip, model, pretrained, tag)
    what = f"open_clip {model}/{pretrained} weights ({part})"
    licence = ("MIT (OpenAI's CLIP repository)" if pretrained == "openai"
               else "unknown here (see the tag's model card)")

    def fetch() -> Path:
        return download_pretrained(open_clip, model, pretrained, tag)

    hub = tag.get("hf_hub", "")
    if hub and has_hf_hub():
        repo_id, name = os.path.split(hub)  # "org/model/" names no file: open_clip's default
        name = name or _HUB_WEIGHTS
        stem, suffix = os.path.splitext(name)
        twins = ([_HUB_SAFE_WEIGHTS] if name == _HUB_WEIGHTS
                 else [stem + ".safetensors"] if suffix in (".bin", ".pth") else [])
        return [hub_file(what=what, repo_id=repo_id, filenames=[*twins, name], licence=licence,
                         fetch=fetch)]
    url = tag["url"]
    name = os.path.basename(url)
    if "openaipublic" in url:
        checksum = url.split("/")[-2]
    elif "mlfoundations" in url:
        checksum = os.path.splitext(name)[0].split("-")[-1]
    else:
        checksum = None

    def find() -> Path | None:
        path = Path("~/.cache/clip").expanduser() / name
        return path if path.is_file() else None

    return [PretrainedFile(what=what, source=url, size=None, sha256=checksum or None,
                           licence=licence, find=find, fetch=fetch)]


def clip_pretrained_files(config: ClipConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``)."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    return open_clip_files(config.model, config.pretrained, part="image tower")
