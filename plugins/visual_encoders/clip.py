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

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import PretrainedFile
from v2a.weights import PRETRAINED

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


def clip_pretrained_files(config: ClipConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``)."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    from v2a_plugins.visual_encoders.clip_model import open_clip_files  # deferred: open_clip (its pretrained list)

    return open_clip_files(config.model, config.pretrained, part="image tower")


def build_encoder(config: ClipConfig):
    """The :class:`ClipEncoder` of ``config`` (its module, open_clip and torch load on first use)."""
    from v2a_plugins.visual_encoders.clip_model import ClipEncoder  # deferred: torch (the tower)

    return ClipEncoder(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="visual_encoder", name="clip", build=build_encoder, config=ClipConfig,
        requires=("open_clip", "torchvision"), install="pip install 'v2a[clip]'",
        properties=clip_properties, pretrained_files=clip_pretrained_files,
        description="CLIP image embedding per frame (open_clip; ViT-B-32 at 8 fps)",
    ))


#: The implementation's public names, imported from :mod:`v2a_plugins.visual_encoders.clip_model`
#: on first use (with ``_quiet_random_init``, which the ``clip_text`` text encoder shares).
_MODEL_NAMES = ("ClipEncoder", "build_vision_tower", "download_pretrained", "open_clip_files",
                "pretrained_model", "resize_and_crop", "vision_state")
_HOMES = {"v2a_plugins.visual_encoders.clip_model": (*_MODEL_NAMES, "_quiet_random_init")}
__all__ = ["MODEL_SIZES", "ClipConfig", "build_encoder", "clip_pretrained_files", "clip_properties",
           *_MODEL_NAMES]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
