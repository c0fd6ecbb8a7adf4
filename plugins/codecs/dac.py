"""DAC, the Descript Audio Codec, as a v2a :class:`~v2a.interfaces.AudioCodec` (plug-in ``dac``).

MaskVAT's codec: the 44.1 kHz DAC, 9 residual codebooks of 1024 entries at 44100 / 512 = 86.13
frames per second. The model is the library's own ``dac.DAC``; this module only decides where
its weights come from and speaks v2a's tensor contracts.

* **Weights** (``weights``): ``"pretrained"`` downloads the published checkpoint with the
  library's own ``dac.utils.download(model_type=...)`` (cached in ``~/.cache/descript/dac``);
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
* **Precision** (``precision``): ``auto`` runs the encoder and the decoder each in bfloat16
  where a measurement on this machine finds it faster and accurate enough
  (:mod:`v2a_plugins.codecs.precision`; cached per CPU, torch version and configuration);
  ``float32`` (the default, the library's arithmetic) and ``bfloat16`` force one. On a
  2-core Xeon with AMX, ``auto`` picks bf16 for both and is what reaches real time (decode:
  2.3× real time in bf16, 0.8× in fp32; docs/performance.md). The quantiser always runs
  in the codec's own dtype (float32), and ``decode`` returns that dtype.
* **Frozen**: the codec is a fixed tokenizer in MaskVAT: parameters do not require grad and the
  component starts in eval mode. Encoding does not depend on the train/eval mode.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from v2a import AudioCodec, ComponentSpec, FeatureSequence, hookimpl
from v2a.pretrained import PretrainedFile
from v2a.weights import PRETRAINED, WeightsError, is_random, load_checkpoint, local_file, parse_weights
from v2a_plugins.codecs.inference import remove_weight_norms, use_channels_last_convs
from v2a_plugins.codecs.precision import DTYPES, Precision, choose_encoder_decoder

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
    (``None``: always in one pass). ``precision``: see the module docstring.
    """

    model: Literal["44khz", "24khz", "16khz"] = "44khz"
    """the published model: 44.1, 24 or 16 kHz, with its strides"""
    n_codebooks: int | None = None
    """RVQ levels used, the coarsest first; null: all the model has (9, 32 or 12)"""
    weights: str = PRETRAINED
    """pretrained (downloaded by the dac library), none (random) or the path of a checkpoint"""
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
    precision: Precision = "float32"
    """encoder and decoder precision: float32, bfloat16, or auto (bfloat16 each where measured faster here)"""

    def __post_init__(self) -> None:
        for name in ("n_codebooks", *ARCHITECTURE):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if self.chunk_seconds is not None and not self.chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be positive or null, got {self.chunk_seconds}")


# -- helpers ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_deprecations():
    """Silence the library's own deprecation warnings (``torch.jit.script``, old weight_norm)."""
    with warnings.catch_warnings():
        for what in (r"torch\.jit\.script", r"weight_norm"):
            warnings.filterwarnings("ignore", message=rf".*{what}.*is deprecated", category=FutureWarning)
        yield


def _import_dac():
    with _quiet_deprecations():
        import dac
    return dac


def encoder_receptive_field(encoder_rates: list[int]) -> int:
    """Input samples one code frame of a DAC encoder with these strides depends on.

    The encoder is a kernel-7 conv, then per stride ``s`` three residual units (kernel 7,
    dilations 1, 3, 9) and a kernel-``2s`` conv of stride ``s``, then a kernel-3 conv. A layer
    of kernel ``k`` and dilation ``d`` at an input spacing (jump) of ``j`` samples widens the
    field by ``(k - 1) * d * j``. 44.1 kHz: 7978 samples (15.6 frames of 512).
    """
    field, jump = 1 + 6, 1
    for stride in encoder_rates:
        field += 6 * (1 + 3 + 9) * jump  # the residual units
        field += (2 * stride - 1) * jump  # the strided conv
        jump *= stride
    return field + 2 * jump  # the last conv, at the frame rate


@functools.cache
def _fused_snake_class() -> type:
    """A subclass of the library's ``Snake1d`` computing ``x + sin²(αx) / (α + 1e-9)`` in four
    passes over the activations instead of five (the same arithmetic, the last multiply-add fused)."""
    snake = _import_dac().nn.layers.Snake1d

    class FusedSnake1d(snake):
        def forward(self, x: Tensor) -> Tensor:
            wave = torch.sin(self.alpha * x)
            return torch.addcmul(x, wave.mul_(wave), (self.alpha + 1e-9).reciprocal())

    return FusedSnake1d


def speed_up(model) -> None:
    """Rewrite a loaded ``dac.DAC`` in place for inference (see the module docstring): weight
    normalisation folded, channels-last convolutions, fused Snake activations."""
    remove_weight_norms(model)
    use_channels_last_convs(model)
    fused, snake = _fused_snake_class(), _import_dac().nn.layers.Snake1d
    for module in model.modules():
        if type(module) is snake:
            module.__class__ = fused


def _count_quantizers(state: Mapping[str, Tensor]) -> int:
    levels = {key.split(".")[2] for key in state if key.startswith("quantizer.quantizers.")}
    return len(levels)


def _strip_prefix(state: Mapping[str, Tensor], prefix: str = "model.") -> dict[str, Tensor]:
    """A state dict saved from this component (keys ``model.…``) as the bare ``dac.DAC`` one."""
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    return dict(state)


# -- building and loading ---------------------------------------------------------------------------


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


def _weights_file(config: DACConfig) -> Path:
    dac = _import_dac()
    if config.weights.strip().lower() == PRETRAINED:
        try:
            return Path(dac.utils.download(model_type=config.model))
        except Exception as exc:
            raise WeightsError(
                f"could not download the published DAC {config.model} weights "
                f"({type(exc).__name__}: {exc}); on a machine with internet run "
                f"`python -m dac download --model_type {config.model}` and give the downloaded "
                "file's path as the weights option"
            ) from None
    return local_file(config.weights, what=f"the DAC {config.model} codec")


def _checkpoint_kwargs(checkpoint: Mapping, path: Path) -> dict[str, Any]:
    """The ``dac.DAC`` arguments a library-format checkpoint records (``metadata["kwargs"]``)."""
    dac = _import_dac()
    metadata = checkpoint.get("metadata")
    kwargs = metadata.get("kwargs") if isinstance(metadata, Mapping) else None
    if not isinstance(kwargs, Mapping):
        raise WeightsError(
            f"{path} has a state_dict but no metadata['kwargs'], so it is not a DAC checkpoint; "
            "save one with DAC.save(path, package=False) or give the state dict as .safetensors"
        )
    accepted = inspect.signature(dac.DAC).parameters
    return {key: value for key, value in kwargs.items() if key in accepted}


def _check_agrees(config: DACConfig, model, path: Path) -> None:
    """The options a recipe set must agree with the architecture the checkpoint decided."""
    expected_rate = PUBLISHED[config.model]["sample_rate"]
    if model.sample_rate != expected_rate:
        raise WeightsError(
            f"{path} is a {model.sample_rate} Hz DAC, but the model option is {config.model!r} "
            f"({expected_rate} Hz); set model to the checkpoint's rate"
        )
    for name in ARCHITECTURE:
        wanted, found = getattr(config, name), getattr(model, name)
        if wanted is not None and wanted != found:
            raise WeightsError(
                f"{path} is a DAC with {name} {found}, but the options set {name} {wanted}; the "
                f"checkpoint decides the architecture, so leave {name} unset"
            )
    if config.n_codebooks is not None and config.n_codebooks > model.n_codebooks:
        raise WeightsError(
            f"n_codebooks is {config.n_codebooks}, but {path} has only {model.n_codebooks} "
            f"codebooks; use at most {model.n_codebooks}"
        )


def load_dac(config: DACConfig):
    """A ``dac.DAC`` for ``config``: random, published or from a local file."""
    dac = _import_dac()
    with _quiet_deprecations():
        if is_random(config.weights):
            return dac.DAC(**dac_kwargs(config))
        path = _weights_file(config)
        checkpoint = load_checkpoint(path)
        if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:  # the library's format
            model = dac.DAC(**_checkpoint_kwargs(checkpoint, path))
            _check_agrees(config, model, path)
            state, lenient = checkpoint["state_dict"], True  # as DAC.load: extra keys are ignored
        else:  # a bare state dict (safetensors): the options give the architecture
            state = _strip_prefix(checkpoint)
            model = dac.DAC(**dac_kwargs(config, n_codebooks=_count_quantizers(state) or None))
            _check_agrees(config, model, path)  # only n_codebooks can disagree here
            if not any(key.endswith(".weight_g") for key in state):  # saved from a DACCodec
                remove_weight_norms(model)
            lenient = False
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise WeightsError(
                f"{path} does not fit a DAC built from these options "
                f"({str(exc).strip().splitlines()[-1].strip()})"
            ) from None
        missing, unexpected = result.missing_keys, [] if lenient else result.unexpected_keys
        if missing or unexpected:
            keys = ", ".join((missing or unexpected)[:3])
            raise WeightsError(
                f"{path} does not fit a DAC built from these options: "
                f"{'missing' if missing else 'unexpected'} keys {keys}"
                f"{', ...' if len(missing or unexpected) > 3 else ''}"
            )
        return model


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


# -- the codec ----------------------------------------------------------------------------------------


class DACCodec(AudioCodec):
    """``dac.DAC`` behind the :class:`~v2a.interfaces.AudioCodec` contract.

    ``encode``: ``[b, c, n]`` → int64 codes ``[b, n_codebooks, ceil(n / hop_length)]``;
    ``decode``: codes → ``[b, 1, l * hop_length]`` (or ``length``); ``latents``: the quantised
    latent ``z_q = quantizer.from_codes(codes)`` as ``[b, l, latent_dim]`` at ``frame_rate``.
    """

    def __init__(self, config: DACConfig):
        super().__init__()
        self.config = config
        self.model = load_dac(config)
        speed_up(self.model)
        self.model.requires_grad_(False)  # a frozen tokenizer (after speed_up's new weights)

        self.sample_rate = int(self.model.sample_rate)
        self.channels = 1
        self.hop_length = int(math.prod(self.model.encoder_rates))
        self.frame_rate = self.sample_rate / self.hop_length
        self.n_codebooks = config.n_codebooks or int(self.model.n_codebooks)
        self.codebook_size = int(self.model.codebook_size)
        self.latent_dim = int(self.model.latent_dim)

        # encoding in windows: `chunk_frames` kept per window, `margin_frames` of context each side
        self.receptive_field = encoder_receptive_field(list(self.model.encoder_rates))
        self.margin_frames = math.ceil(self.receptive_field / self.hop_length)
        self.chunk_frames = (
            None if config.chunk_seconds is None
            else max(1, round(config.chunk_seconds * self.frame_rate))
        )
        self.eval()
        self.precisions = self._choose_precisions()
        self.model.encoder.to(DTYPES[self.precisions["encode"]])
        self.model.decoder.to(DTYPES[self.precisions["decode"]])

    def _choose_precisions(self) -> dict[str, str]:
        """``{"encode": ..., "decode": ...}``: the configured precision, or (``auto``) the one
        measured on one second of noise (:func:`~v2a_plugins.codecs.precision.choose_precisions`)."""
        if self.config.precision != "auto":
            return {"encode": self.config.precision, "decode": self.config.precision}
        wav = 0.1 * torch.randn(1, 1, self.sample_rate, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            codes = self.encode(wav)
            z = self._embed(codes)

        options = {k: v for k, v in vars(self.config).items() if k not in ("precision", "chunk_seconds")}
        return choose_encoder_decoder(self.model.encoder, self.model.decoder, wav, z,
                                      key={"codec": "dac", **options})

    # -- encode -------------------------------------------------------------------------------------

    def _quantize(self, z: Tensor) -> Tensor:
        """Encoder output ``z: [b, latent_dim, l]`` → codes ``[b, n_codebooks, l]`` (residual VQ
        over the first ``n_codebooks`` levels, as ``ResidualVectorQuantize`` does in eval)."""
        codes, residual = [], z
        for quantizer in self.model.quantizer.quantizers[: self.n_codebooks]:
            projected = quantizer.in_proj(residual)  # [b, codebook_dim, l]
            entries, indices = quantizer.decode_latents(projected)  # nearest entries, [b, l]
            residual = residual - quantizer.out_proj(entries)
            codes.append(indices)
        return torch.stack(codes, dim=1)

    def _encode_frames(self, wav: Tensor) -> Tensor:
        """``wav: [b, 1, l * hop_length]`` → codes ``[b, k, l]`` in one pass (the encoder in its
        own precision, the quantiser in the codec's)."""
        z = self.model.encoder(wav.to(_dtype_of(self.model.encoder)))
        return self._quantize(z.to(self._dtype()))

    def encode(self, wav: Tensor) -> Tensor:
        """``wav: [b, c, n]`` → codes ``[b, n_codebooks, num_frames(n)]`` int64."""
        mono = wav.mean(dim=1, keepdim=True)  # [b, 1, n]
        frames = math.ceil(mono.shape[-1] / self.hop_length)
        # DAC's preprocess: zero-pad to whole frames
        mono = F.pad(mono, (0, frames * self.hop_length - mono.shape[-1]))
        chunk, margin, hop = self.chunk_frames, self.margin_frames, self.hop_length
        if chunk is None or frames <= chunk + 2 * margin:
            return self._encode_frames(mono)
        pieces = []
        for start in range(0, frames, chunk):
            stop = min(start + chunk, frames)
            lo, hi = max(0, start - margin), min(frames, stop + margin)  # the window, in frames
            codes = self._encode_frames(mono[..., lo * hop : hi * hop])  # [b, k, hi - lo]
            pieces.append(codes[..., start - lo : stop - lo])
        return torch.cat(pieces, dim=-1)

    # -- decode and latents ------------------------------------------------------------------------

    def _check_codes(self, codes: Tensor) -> None:
        if codes.dim() != 3 or codes.shape[1] != self.n_codebooks:
            raise ValueError(
                f"DAC codes must be [b, {self.n_codebooks}, l], got {list(codes.shape)}"
            )

    def _embed(self, codes: Tensor) -> Tensor:
        """codes ``[b, k, l]`` → quantised latents ``z_q: [b, latent_dim, l]`` (first k levels)."""
        self._check_codes(codes)
        return self.model.quantizer.from_codes(codes.long())[0]

    def decode_frames(self, codes: Tensor) -> Tensor:
        """codes ``[b, k, l]`` → ``wav: [b, 1, ~l * hop_length]``, as the decoder gives it
        (``decode`` fits it to ``l * hop_length`` or the length asked for), in the codec's dtype."""
        z = self._embed(codes)
        return self.model.decoder(z.to(_dtype_of(self.model.decoder))).to(z.dtype)

    def latents(self, codes: Tensor) -> FeatureSequence:
        """codes ``[b, k, l]`` → ``[b, l, latent_dim]`` at ``frame_rate``."""
        z = rearrange(self._embed(codes), "b d l -> b l d")
        return FeatureSequence(values=z, rate=self.frame_rate)

    def _dtype(self) -> torch.dtype:
        return self.model.quantizer.quantizers[0].codebook.weight.dtype


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


#: The bit rate of the published models ``dac.utils.download(model_type=...)`` fetches.
PUBLISHED_BITRATE = "8kbps"


def dac_pretrained_files(config: DACConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``): the
    release file of ``config.model`` at the library's latest tag, found where
    ``dac.utils.download`` keeps it (``~/.cache/descript/dac/weights_<model>_8kbps_<tag>.pth``).
    The release publishes no checksum; the library's download shows no progress bar."""
    if config.weights.strip().lower() != PRETRAINED:
        return []
    utils = _import_dac().utils
    tag = utils.__MODEL_LATEST_TAGS__[(config.model, PUBLISHED_BITRATE)]
    url = utils.__MODEL_URLS__[(config.model, tag, PUBLISHED_BITRATE)]

    def find() -> Path | None:
        path = (Path.home() / ".cache" / "descript" / "dac"
                / f"weights_{config.model}_{PUBLISHED_BITRATE}_{tag}.pth")
        return path if path.is_file() else None

    def fetch() -> Path:
        return _weights_file(config)

    return [PretrainedFile(what=f"DAC {config.model} codec weights (release {tag})", source=url,
                           size=None, sha256=None, licence="MIT (descript-audio-codec)",
                           find=find, fetch=fetch)]


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="codec", name="dac", build=DACCodec, config=DACConfig, requires=("dac",),
        install="pip install 'v2a[dac]'", properties=dac_properties,
        pretrained_files=dac_pretrained_files,
        description="Descript Audio Codec (44.1/24/16 kHz, RVQ 1024-entry codebooks); MaskVAT's codec",
    ))
