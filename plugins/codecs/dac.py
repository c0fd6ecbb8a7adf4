"""DAC, the Descript Audio Codec, as a v2a :class:`~v2a.interfaces.AudioCodec` (plug-in ``dac``).

MaskVAT's codec: the 44.1 kHz DAC, 9 residual codebooks of 1024 entries at 44100 / 512 = 86.13
frames per second. The model is the library's own ``dac.DAC``; this module only decides where
its weights come from and speaks v2a's tensor contracts.

* **Weights** (``weights``): ``"pretrained"`` downloads the published checkpoint once, with a
  progress bar, to the file the library's own ``dac.utils.download(model_type=...)`` keeps
  (in ``~/.cache/descript/dac``: :func:`release_file`), so each finds the other's copy;
  a path names a local file; ``"none"`` is random initialisation (tests, small models). A torch
  checkpoint in the library's format (``{"state_dict", "metadata": {"kwargs"}}``) is read with
  :func:`v2a.weights.load_checkpoint` (``weights_only``, never code) and the model is built from
  its ``metadata["kwargs"]``: the checkpoint decides the architecture, and an architecture
  option that disagrees with it is an error. A ``.safetensors`` file holds the state dict alone;
  the model is then built from the options (the number of quantizers from the file).
* **Codebooks** (``n_codebooks``): fewer than the model has selects the first (coarsest)
  levels: ``encode`` returns only those, ``decode`` and ``latents`` read only those.
* **Mono**: DAC is a mono codec; multi-channel input is mixed down.
* **Long audio** (``chunk_seconds``): ``encode`` runs the encoder on windows of
  ``chunk_seconds`` plus a margin of at least the encoder's receptive field on each side, and
  keeps each window's middle frames, so memory stays bounded. Windows start on the frame grid,
  so every kept frame sees exactly the samples it sees in one pass: the codes are those of a
  single pass (up to float rounding in a quantiser decision on a boundary).
* **Speed** (:mod:`v2a_plugins.codecs.inference`): once the weights are loaded, weight
  normalisation is folded into plain weights, the convolutions run channels-last (oneDNN's
  fast layout) and the Snake activations in fewer passes over memory. The outputs are those
  of the library's model up to float rounding. The state dict then holds each convolution's
  ``weight`` instead of ``weight_g``/``weight_v``; a ``.safetensors`` file of either layout loads.
* **Precision** (``encode_precision``, ``decode_precision``): ``auto`` runs that part in
  bfloat16 where a measurement on this machine finds it faster and accurate enough
  (:mod:`v2a_plugins.codecs.precision`; cached per CPU, torch version and configuration);
  ``float32`` (the default, the library's arithmetic) and ``bfloat16`` force one. On a
  2-core Xeon with AMX, ``auto`` picks bf16 and is what reaches real time for decoding (2.3×
  real time in bf16, 0.8× in fp32; docs/performance.md). The recipes' DAC
  (``recipes/components/codecs/dac_44khz.yaml``) decodes with ``auto`` and encodes in float32:
  the codes that training learns are the library's own, the audio ``v2a generate`` writes is
  decoded at the measured speed. The quantiser always runs
  in the codec's own dtype (float32), and ``decode`` returns that dtype.
* **Frozen**: the codec is a fixed tokenizer in MaskVAT: parameters do not require grad and the
  component starts in eval mode. Encoding does not depend on the train/eval mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import PretrainedFile
from v2a.weights import PRETRAINED, is_random, parse_weights
from v2a_plugins.codecs.options import Precision

# -- the published models -------------------------------------------------------------------------

#: The published configurations (descript-audio-codec ``conf/final/*.yml``; the 8 kbps models
#: that ``dac.utils.download(model_type=...)`` fetches by default).
PUBLISHED: dict[str, dict[str, Any]] = {
    "44khz": dict(sample_rate=44100, encoder_rates=[2, 4, 8, 8], decoder_rates=[8, 8, 4, 2], n_codebooks=9),
    "24khz": dict(sample_rate=24000, encoder_rates=[2, 4, 5, 8], decoder_rates=[8, 5, 4, 2], n_codebooks=32),
    "16khz": dict(sample_rate=16000, encoder_rates=[2, 4, 5, 8], decoder_rates=[8, 5, 4, 2], n_codebooks=12),
}
#: Shared by all three (``latent_dim=None``: DAC derives ``encoder_dim * 2 ** len(encoder_rates)``).
PUBLISHED_SHARED: dict[str, Any] = dict(
    encoder_dim=64, decoder_dim=1536, latent_dim=None, codebook_size=1024, codebook_dim=8
)
#: Architecture options a recipe may set for a randomly initialised model.
ARCHITECTURE = ("encoder_dim", "decoder_dim", "latent_dim", "codebook_size", "codebook_dim")


@dataclass
class DACConfig:
    """Options of the ``dac`` codec.

    ``model`` picks the sample rate and strides (44.1, 24 or 16 kHz). ``n_codebooks``: how many
    RVQ levels to use (``None``: all the model has: 9, 32 or 12). ``weights``: ``"pretrained"``,
    ``"none"`` or a local file. The architecture fields (``None``: the published value) shape a
    randomly initialised model; with a checkpoint its metadata decides, and a field set here
    that disagrees is an error. ``chunk_seconds``: encode audio longer than this in windows
    (``None``: always in one pass). ``encode_precision``, ``decode_precision``: see the module
    docstring.
    """

    model: Literal["44khz", "24khz", "16khz"] = "44khz"
    """the published model: 44.1, 24 or 16 kHz, with its strides"""
    n_codebooks: int | None = None
    """RVQ levels used, the coarsest first; null: all the model has (9, 32 or 12)"""
    weights: str = PRETRAINED
    """pretrained (the published release, downloaded once), none (random) or the path of a checkpoint"""
    encoder_dim: int | None = None
    """random init: encoder width; null: the published value"""
    decoder_dim: int | None = None
    """random init: decoder width; null: the published value"""
    latent_dim: int | None = None
    """random init: latent width; null: the published value"""
    codebook_size: int | None = None
    """random init: entries per codebook; null: the published value"""
    codebook_dim: int | None = None
    """random init: width of the codebook lookups; null: the published value"""
    chunk_seconds: float | None = 30.0
    """encode audio longer than this in windows of this many seconds; null: always in one pass"""
    encode_precision: Precision = "float32"
    """the encoder's precision: float32, bfloat16, or auto (bfloat16 where measured faster here)"""
    decode_precision: Precision = "float32"
    """the decoder's precision: float32, bfloat16, or auto (bfloat16 where measured faster here)"""

    def __post_init__(self) -> None:
        for name in ("n_codebooks", *ARCHITECTURE):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if self.chunk_seconds is not None and not self.chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be positive or null, got {self.chunk_seconds}")


# -- what the options give, without building -------------------------------------------------------


def dac_kwargs(config: DACConfig, *, n_codebooks: int | None = None) -> dict[str, Any]:
    """``dac.DAC`` keyword arguments for ``config``: the published model, the options over it."""
    kwargs = {**PUBLISHED_SHARED, **PUBLISHED[config.model]}
    kwargs["decoder_rates"] = list(kwargs["decoder_rates"])
    kwargs["encoder_rates"] = list(kwargs["encoder_rates"])
    for name in ARCHITECTURE:
        if getattr(config, name) is not None:
            kwargs[name] = getattr(config, name)
    kwargs["n_codebooks"] = n_codebooks or config.n_codebooks or kwargs["n_codebooks"]
    kwargs["quantizer_dropout"] = 0.0  # training only; irrelevant to a frozen codec
    return kwargs


def dac_properties(config: DACConfig) -> dict[str, Any]:
    """The codec attributes ``config`` gives, without building (see ``ComponentSpec.properties``).

    Random and published weights: every attribute, from the published model and the options
    over it (``latent_dim`` unset is DAC's ``encoder_dim * 2 ** len(encoder_rates)``). A
    ``.safetensors`` file: the options decide the architecture but the file the number of
    codebooks, so ``n_codebooks`` only when the options set it. A library checkpoint decides
    its architecture: only the sample rate (checked against ``model``) and what the options set.
    """
    kwargs = dac_kwargs(config)
    rate = int(kwargs["sample_rate"])
    latent_dim = kwargs["latent_dim"] or kwargs["encoder_dim"] * 2 ** len(kwargs["encoder_rates"])
    architecture = {
        "frame_rate": rate / math.prod(kwargs["encoder_rates"]),
        "codebook_size": int(kwargs["codebook_size"]),
        "latent_dim": int(latent_dim),
    }
    props: dict[str, Any] = {"sample_rate": rate, "channels": 1}
    weights = config.weights.strip().lower()
    if is_random(weights) or weights == PRETRAINED:
        return {**props, **architecture, "n_codebooks": int(kwargs["n_codebooks"])}
    file_name = parse_weights(config.weights).file_name  # a path, a URL or an hf:// value
    if file_name.endswith(".safetensors"):  # as load_checkpoint tells the formats
        props.update(architecture)
    else:  # the checkpoint's metadata decides; the options that are set must agree with it
        props.update({name: architecture[name] for name in ("codebook_size", "latent_dim")
                      if getattr(config, name) is not None})
    if config.n_codebooks is not None:
        props["n_codebooks"] = config.n_codebooks
    return props


#: The bit rate of the published models ``dac.utils.download(model_type=...)`` fetches.
PUBLISHED_BITRATE = "8kbps"


def release_file(config: DACConfig) -> tuple[str, Path]:
    """``(url, path)`` of the published weights of ``config.model`` at the dac library's latest
    tag: the release URL, and where ``dac.utils.download`` keeps the file
    (``~/.cache/descript/dac/weights_<model>_8kbps_<tag>.pth``), which is where v2a downloads it
    too, so either finds the other's copy. Imports the dac library."""
    from v2a_plugins.codecs.dac_model import _import_dac  # deferred: torch (the dac library)

    utils = _import_dac().utils
    tag = utils.__MODEL_LATEST_TAGS__[(config.model, PUBLISHED_BITRATE)]
    url = utils.__MODEL_URLS__[(config.model, tag, PUBLISHED_BITRATE)]
    path = (Path.home() / ".cache" / "descript" / "dac"
            / f"weights_{config.model}_{PUBLISHED_BITRATE}_{tag}.pth")
    return url, path


def dac_pretrained_files(config: DACConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``): the
    release file of ``config.model`` (:func:`release_file`). The release publishes no checksum."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    from v2a_plugins.codecs.dac_model import _weights_file  # deferred: torch (the dac library)

    url, path = release_file(config)
    tag = path.stem.rsplit("_", 1)[-1]

    def find() -> Path | None:
        return path if path.is_file() else None

    def fetch() -> Path:
        return _weights_file(config)

    return [PretrainedFile(what=f"DAC {config.model} codec weights (release {tag})", source=url,
                           size=None, sha256=None, licence="MIT (descript-audio-codec)",
                           find=find, fetch=fetch)]


def build_codec(config: DACConfig):
    """The :class:`DACCodec` of ``config`` (its module, and torch, load on first use)."""
    from v2a_plugins.codecs.dac_model import DACCodec  # deferred: torch (the model)

    return DACCodec(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="codec", name="dac", build=build_codec, config=DACConfig, requires=("dac",),
        install="pip install 'v2a[dac]'", properties=dac_properties,
        pretrained_files=dac_pretrained_files,
        description="Descript Audio Codec (44.1/24/16 kHz, RVQ 1024-entry codebooks); MaskVAT's codec",
    ))


#: The implementation's public names, imported from :mod:`v2a_plugins.codecs.dac_model` on first use.
_HOMES = {"v2a_plugins.codecs.dac_model": ("DACCodec", "encoder_receptive_field", "load_dac",
                                           "speed_up")}
__all__ = ["ARCHITECTURE", "PUBLISHED", "PUBLISHED_BITRATE", "PUBLISHED_SHARED", "DACConfig",
           "build_codec", "dac_kwargs", "dac_pretrained_files", "dac_properties",
           *_HOMES["v2a_plugins.codecs.dac_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
