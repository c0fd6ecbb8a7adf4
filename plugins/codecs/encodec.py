"""EnCodec (Meta) as a v2a :class:`~v2a.interfaces.AudioCodec` (plug-in ``encodec``).

Two published models, both the library's own ``encodec.EncodecModel`` with 1024-entry codebooks
and a 128-wide latent, 320 samples per frame:

* ``24khz``: mono, 75 frames/s, causal; 1.5/3/6/12/24 kbps = 2/4/8/16/32 codebooks. It runs
  exactly as the library runs it (no normalisation, no segments).
* ``48khz``: stereo, 150 frames/s, non-causal (its convolutions normalise over time);
  3/6/12/24 kbps = 2/4/8/16 codebooks.

**How the 48 kHz model is run here, and why.** The library cuts the input into 1 s segments
(1 % overlap) and divides each by its RMS, returning that scale beside the codes; decoding
multiplies it back and cross-fades the segments. v2a's codes must be self-contained (a
generator produces codes and nothing else) and form one ``[b, k, l]`` sequence at 150
frames/s, which overlapping segments (148.5 frames apart) cannot. So the whole clip is one
segment: ``encode`` divides each clip by its own RMS (the library's normalisation, applied
once per clip) and keeps no scale; the codes therefore carry no loudness. ``decode`` turns the
unit-RMS output the model was trained to produce into audio at a fixed level,
``output_rms`` (default 0.1, about -20 dBFS), instead of the lost per-segment scale. A clip's
codes depend on the whole clip (its RMS and the model's normalisation over time); the decoded
output is trimmed to the requested length. The 24 kHz model keeps its level (``output_rms`` is
ignored there).

**Weights** (``weights``): ``"pretrained"`` downloads the published checkpoint from the
library's URL into torch's hub cache (the library's own file name and hash check) and reads it
with ``weights_only=True``; a path names a local state-dict file (``.th``/``.pt`` or
``.safetensors``); ``"none"`` is random initialisation. The library leaves a random model's
codebooks at zero until k-means runs on a first training batch (every code would be 0), so
``"none"`` fills them as the library does without k-means (``uniform_init``).

**Speed and precision**, as for DAC: once loaded, weight normalisation is folded into plain
weights (:mod:`v2a_plugins.codecs.inference`; channels-last convolutions, which pay for DAC,
measured no faster here: benchmarks/bench_codecs.py); ``encode_precision: auto`` and
``decode_precision: auto`` run that part in bfloat16 only where a measurement on this machine
finds it faster and accurate enough (:mod:`v2a_plugins.codecs.precision`): the
LSTM decoder is slower in bf16 on some CPUs and faster on others. The quantiser runs in the
codec's dtype (float32), which is also what ``decode`` returns. The default, ``float32``,
is the library's arithmetic.

The codec is frozen (no parameter requires grad) and starts in eval mode; encoding does not
depend on the mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import PretrainedFile, torch_hub_file
from v2a.weights import PRETRAINED
from v2a_plugins.codecs.options import Precision

# -- the published models -----------------------------------------------------------------------

#: Target bandwidths (kbps) of each model; n_codebooks = bandwidth / (10 bits * frame_rate).
BANDWIDTHS: dict[str, tuple[float, ...]] = {
    "24khz": (1.5, 3.0, 6.0, 12.0, 24.0),
    "48khz": (3.0, 6.0, 12.0, 24.0),
}
#: The library's checkpoint files (``EncodecModel.encodec_model_*``), under ``encodec.model.ROOT_URL``.
CHECKPOINTS = {"24khz": "encodec_24khz-d7cc33bc.th", "48khz": "encodec_48khz-7e698e3e.th"}
#: ``(sample_rate, channels)`` of each model; both hop 320 samples per code frame.
MODELS: dict[str, tuple[int, int]] = {"24khz": (24000, 1), "48khz": (48000, 2)}
HOP_LENGTH = 320
CODEBOOK_SIZE = 1024
LATENT_DIM = 128


@dataclass
class EncodecConfig:
    """Options of the ``encodec`` codec.

    ``model``: ``24khz`` (mono, 75 frames/s) or ``48khz`` (stereo, 150 frames/s). ``bandwidth``
    in kbps picks the number of codebooks. ``weights``: ``"pretrained"``, ``"none"`` or a local
    file. ``output_rms``: the level ``decode`` gives the 48 kHz model's output (see the module
    docstring); ignored for 24 kHz. ``encode_precision``, ``decode_precision``: see the module
    docstring.
    """

    model: Literal["24khz", "48khz"] = "24khz"
    """24khz (mono, 75 frames/s) or 48khz (stereo, 150 frames/s)"""
    bandwidth: float = 6.0
    """kbps, which picks the number of codebooks (one the model offers)"""
    weights: str = PRETRAINED
    """pretrained (downloaded by the encodec library), none (random) or the path of a file"""
    output_rms: float = 0.1
    """RMS level decode gives the 48 kHz model's output; ignored at 24 kHz"""
    encode_precision: Precision = "float32"
    """the encoder's precision: float32, bfloat16, or auto (bfloat16 where measured faster here)"""
    decode_precision: Precision = "float32"
    """the decoder's precision: float32, bfloat16, or auto (bfloat16 where measured faster here)"""

    def __post_init__(self) -> None:
        valid = BANDWIDTHS[self.model]
        if self.bandwidth not in valid:
            listed = ", ".join(f"{b:g}" for b in valid)
            raise ValueError(
                f"bandwidth {self.bandwidth:g} kbps is not one the EnCodec {self.model} model "
                f"offers; use one of {listed}"
            )
        if not self.output_rms > 0:
            raise ValueError(f"output_rms must be positive, got {self.output_rms}")


def encodec_properties(config: EncodecConfig) -> dict:
    """The codec attributes ``config`` gives, without building (see ``ComponentSpec.properties``):
    the model fixes everything but the number of codebooks, which the bandwidth gives as the
    library counts it, ``floor(bandwidth / (log2(codebook_size) * frame_rate / 1000))``. A
    weights file cannot change them: it is loaded strictly into the model the options name."""
    sample_rate, channels = MODELS[config.model]
    frame_rate = sample_rate / HOP_LENGTH
    kbps_per_codebook = math.log2(CODEBOOK_SIZE) * frame_rate / 1000
    return {
        "sample_rate": sample_rate, "channels": channels, "frame_rate": frame_rate,
        "n_codebooks": max(1, math.floor(config.bandwidth / kbps_per_codebook)),
        "codebook_size": CODEBOOK_SIZE, "latent_dim": LATENT_DIM,
    }


def encodec_pretrained_files(config: EncodecConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``): the
    library's checkpoint of ``config.model``, from its URL into torch.hub's checkpoint folder,
    checked by the SHA-256 prefix its file name carries (as the library's own load checks it)."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    from encodec.model import ROOT_URL  # deferred: torch (the encodec library)

    return [torch_hub_file(what=f"EnCodec {config.model} codec weights",
                           url=ROOT_URL + CHECKPOINTS[config.model], check_hash=True,
                           licence="CC BY-NC 4.0 (encodec 0.1.1's licence)")]


def build_codec(config: EncodecConfig):
    """The :class:`EncodecCodec` of ``config`` (its module, and torch, load on first use)."""
    from v2a_plugins.codecs.encodec_model import EncodecCodec  # deferred: torch (the model)

    return EncodecCodec(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="codec", name="encodec", build=build_codec, config=EncodecConfig,
        requires=("encodec",), install="pip install 'v2a[encodec]'", properties=encodec_properties,
        pretrained_files=encodec_pretrained_files,
        description="Meta EnCodec (24 kHz mono / 48 kHz stereo, 1.5-24 kbps)",
    ))


#: The implementation's public names, imported from :mod:`v2a_plugins.codecs.encodec_model` on first use.
_HOMES = {"v2a_plugins.codecs.encodec_model": ("EncodecCodec", "load_encodec")}
__all__ = ["BANDWIDTHS", "CHECKPOINTS", "CODEBOOK_SIZE", "HOP_LENGTH", "LATENT_DIM", "MODELS",
           "EncodecConfig", "build_codec", "encodec_pretrained_files", "encodec_properties",
           *_HOMES["v2a_plugins.codecs.encodec_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
