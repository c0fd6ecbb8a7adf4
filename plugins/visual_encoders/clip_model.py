"""The ``clip`` visual encoder's implementation: :class:`ClipEncoder`, building open_clip's vision
tower, its preprocessing in torch and open_clip's downloads (torch, open_clip).

The plug-in's documentation, options and registration are in
:mod:`v2a_plugins.visual_encoders.clip`, which imports this module the first time an encoder is
built; the ``clip_text`` text encoder shares the open_clip helpers here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from v2a import FeatureSequence, VisualEncoder
from v2a.errors import UserError, suggestion
from v2a.pretrained import PretrainedFile, hub_file
from v2a.sequences import first_frame_time
from v2a.weights import PRETRAINED, WeightsError, is_random, load_checkpoint, load_into, local_file
from v2a_plugins.visual_encoders.clip import ClipConfig

#: A minimal text tower for models whose text tower is discarded at once (open_clip builds both).
_UNUSED_TEXT_TOWER = dict(context_length=1, vocab_size=1, width=8, heads=1, layers=1)


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


def shared_model_kwargs(config, tag: dict) -> dict:
    """The ``open_clip.create_model`` keywords both CLIP towers' options give (``config``: a
    ``clip`` or ``clip_text`` config): ``embed_dim`` when set, and the activation, the option's
    ``quick_gelu`` or else the pre-trained tag's (``tag``: ``open_clip.get_pretrained_cfg``)."""
    kwargs: dict = {}
    if config.embed_dim is not None:
        kwargs["embed_dim"] = config.embed_dim
    quick_gelu = config.quick_gelu if config.quick_gelu is not None else tag.get("quick_gelu")
    if quick_gelu:
        kwargs["force_quick_gelu"] = True  # before open_clip's check of the tag, which then agrees
    elif quick_gelu is not None:
        kwargs["quick_gelu"] = False
    return kwargs


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
    kwargs = shared_model_kwargs(config, tag)
    vision = config.vision_overrides()
    if vision:
        kwargs["vision_cfg"] = {**named["vision_cfg"], **vision}

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
