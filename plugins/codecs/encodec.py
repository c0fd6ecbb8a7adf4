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
measured no faster here: benchmarks/bench_codecs.py); ``precision: auto`` runs the encoder and the decoder each in bfloat16 only where a measurement
on this machine finds it faster and accurate enough (:mod:`v2a_plugins.codecs.precision`): the
LSTM decoder is slower in bf16 on some CPUs and faster on others. The quantiser runs in the
codec's dtype (float32), which is also what ``decode`` returns. The default, ``float32``,
is the library's arithmetic.

The codec is frozen (no parameter requires grad) and starts in eval mode; encoding does not
depend on the mode.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor

from v2a import AudioCodec, ComponentSpec, FeatureSequence, hookimpl
from v2a.pretrained import PretrainedFile, torch_hub_file
from v2a.weights import PRETRAINED, WeightsError, is_random, load_checkpoint, local_file
from v2a_plugins.codecs.inference import remove_weight_norms
from v2a_plugins.codecs.precision import DTYPES, Precision, choose_encoder_decoder

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
    docstring); ignored for 24 kHz. ``precision``: see the module docstring.
    """

    model: Literal["24khz", "48khz"] = "24khz"
    """24khz (mono, 75 frames/s) or 48khz (stereo, 150 frames/s)"""
    bandwidth: float = 6.0
    """kbps, which picks the number of codebooks (one the model offers)"""
    weights: str = PRETRAINED
    """pretrained (downloaded by the encodec library), none (random) or the path of a file"""
    output_rms: float = 0.1
    """RMS level decode gives the 48 kHz model's output; ignored at 24 kHz"""
    precision: Precision = "float32"
    """encoder and decoder precision: float32, bfloat16, or auto (bfloat16 each where measured faster here)"""

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


# -- helpers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_deprecations():
    """Silence the library's use of the deprecated ``torch.nn.utils.weight_norm``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*weight_norm.*is deprecated", category=FutureWarning)
        yield


def _init_codebooks(model) -> None:
    """Random codebooks for a randomly initialised model (the library's k-means-free init)."""
    from encodec.quantization.core_vq import uniform_init

    for layer in model.quantizer.vq.layers:
        book = layer._codebook
        entries = uniform_init(*book.embed.shape)
        book.embed.data.copy_(entries)
        book.embed_avg.data.copy_(entries)
        book.inited.data.fill_(1.0)


def load_encodec(config: EncodecConfig):
    """An ``encodec.EncodecModel`` for ``config``: random, published or from a local file."""
    from encodec import EncodecModel
    from encodec.model import ROOT_URL

    build = {"24khz": EncodecModel.encodec_model_24khz, "48khz": EncodecModel.encodec_model_48khz}
    with _quiet_deprecations():
        model = build[config.model](pretrained=False)
    if is_random(config.weights):
        _init_codebooks(model)
        return model
    if config.weights.strip().lower() == PRETRAINED:
        url = ROOT_URL + CHECKPOINTS[config.model]
        try:
            state = torch.hub.load_state_dict_from_url(
                url, map_location="cpu", check_hash=True, weights_only=True
            )
        except Exception as exc:
            raise WeightsError(
                f"could not download the published EnCodec {config.model} weights from {url} "
                f"({type(exc).__name__}: {exc}); download the file on a machine with internet "
                "and give its path as the weights option"
            ) from None
        where = url
    else:
        path = local_file(config.weights, what=f"the EnCodec {config.model} codec")
        state, where = load_checkpoint(path), str(path)
    if isinstance(state, dict) and state and all(key.startswith("model.") for key in state):
        state = {key[len("model."):]: value for key, value in state.items()}  # saved from v2a
    if isinstance(state, dict) and not any(str(key).endswith(".weight_g") for key in state):
        remove_weight_norms(model)  # a state dict of a loaded EncodecCodec: weight norm folded
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = str(exc).strip().splitlines()
        raise WeightsError(
            f"{where} is not a state dict of the EnCodec {config.model} model "
            f"({detail[1].strip() if len(detail) > 1 else detail[0]})"
        ) from None
    return model


# -- the codec ----------------------------------------------------------------------------------


class EncodecCodec(AudioCodec):
    """``encodec.EncodecModel`` behind the :class:`~v2a.interfaces.AudioCodec` contract.

    ``encode``: ``[b, c, n]`` → int64 codes ``[b, n_codebooks, ceil(n / 320)]``; ``decode``:
    codes → ``[b, channels, l * 320]`` (or ``length``); ``latents``: the quantiser's decoding of
    the codes, the embedding the decoder reads, ``[b, l, 128]`` at ``frame_rate``.
    """

    def __init__(self, config: EncodecConfig):
        super().__init__()
        self.config = config
        self.model = load_encodec(config)
        remove_weight_norms(self.model)
        self.model.requires_grad_(False)  # a frozen tokenizer (after the folded weights)

        self.sample_rate = int(self.model.sample_rate)
        self.channels = int(self.model.channels)
        self.hop_length = int(self.model.encoder.hop_length)
        self.frame_rate = self.sample_rate / self.hop_length
        self.bandwidth = float(config.bandwidth)
        self.n_codebooks = self.model.quantizer.get_num_quantizers_for_bandwidth(
            self.model.frame_rate, self.bandwidth
        )
        self.codebook_size = int(self.model.quantizer.bins)
        self.latent_dim = int(self.model.quantizer.dimension)
        self.normalize = config.model == "48khz"
        self.eval()
        self.precisions = self._choose_precisions()
        self.model.encoder.to(DTYPES[self.precisions["encode"]])
        self.model.decoder.to(DTYPES[self.precisions["decode"]])

    def _choose_precisions(self) -> dict[str, str]:
        """``{"encode": ..., "decode": ...}``: the configured precision, or (``auto``) the one
        measured on one second of noise (:func:`~v2a_plugins.codecs.precision.choose_precisions`)."""
        if self.config.precision != "auto":
            return {"encode": self.config.precision, "decode": self.config.precision}
        gen = torch.Generator().manual_seed(0)
        wav = 0.1 * torch.randn(1, self.channels, self.sample_rate, generator=gen)
        with torch.inference_mode():
            emb = self._embed(self.encode(wav))

        options = {k: v for k, v in vars(self.config).items() if k not in ("precision", "output_rms")}
        return choose_encoder_decoder(self.model.encoder, self.model.decoder, wav, emb,
                                      key={"codec": "encodec", **options})

    def _channels(self, wav: Tensor) -> Tensor:
        """``[b, c, n]`` → ``[b, channels, n]``: mixed down to mono, or mono duplicated to stereo."""
        if wav.shape[1] == self.channels:
            return wav
        mono = wav.mean(dim=1, keepdim=True)
        return mono.expand(-1, self.channels, -1)

    def encode(self, wav: Tensor) -> Tensor:
        """``wav: [b, c, n]`` → codes ``[b, n_codebooks, ceil(n / 320)]`` int64."""
        x = self._channels(wav).to(_dtype_of(self.model.encoder))
        if self.normalize:  # the library's per-segment normalisation, once per clip
            rms = x.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt()
            x = x / (1e-8 + rms)
        emb = self.model.encoder(x).to(self._dtype())  # [b, 128, l]
        codes = self.model.quantizer.encode(emb, self.model.frame_rate, self.bandwidth)  # [k, b, l]
        return rearrange(codes, "k b l -> b k l")

    def _embed(self, codes: Tensor) -> Tensor:
        """codes ``[b, k, l]`` → the decoder's input ``[b, 128, l]``."""
        if codes.dim() != 3 or codes.shape[1] != self.n_codebooks:
            raise ValueError(
                f"EnCodec codes must be [b, {self.n_codebooks}, l], got {list(codes.shape)}"
            )
        return self.model.quantizer.decode(rearrange(codes.long(), "b k l -> k b l"))

    def decode_frames(self, codes: Tensor) -> Tensor:
        """codes ``[b, k, l]`` → ``wav: [b, channels, l * 320]`` (``decode`` fits it to the
        length asked for)."""
        emb = self._embed(codes)
        wav = self.model.decoder(emb.to(_dtype_of(self.model.decoder))).to(emb.dtype)  # [b, channels, l * 320]
        return wav * self.config.output_rms if self.normalize else wav

    def latents(self, codes: Tensor) -> FeatureSequence:
        """codes ``[b, k, l]`` → ``[b, l, 128]`` at ``frame_rate``."""
        values = rearrange(self._embed(codes), "b d l -> b l d")
        return FeatureSequence(values=values, rate=self.frame_rate)

    def _dtype(self) -> torch.dtype:
        return self.model.quantizer.vq.layers[0]._codebook.embed.dtype


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def encodec_pretrained_files(config: EncodecConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``): the
    library's checkpoint of ``config.model``, from its URL into torch.hub's checkpoint folder,
    checked by the SHA-256 prefix its file name carries (as the library's own load checks it)."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    from encodec.model import ROOT_URL

    return [torch_hub_file(what=f"EnCodec {config.model} codec weights",
                           url=ROOT_URL + CHECKPOINTS[config.model], check_hash=True,
                           licence="CC BY-NC 4.0 (encodec 0.1.1's licence)")]


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="codec", name="encodec", build=EncodecCodec, config=EncodecConfig,
        requires=("encodec",), install="pip install 'v2a[encodec]'", properties=encodec_properties,
        pretrained_files=encodec_pretrained_files,
        description="Meta EnCodec (24 kHz mono / 48 kHz stereo, 1.5-24 kbps)",
    ))
