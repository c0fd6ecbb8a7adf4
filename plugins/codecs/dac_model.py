"""The ``dac`` codec's implementation: :class:`DACCodec` and its loading (torch, the dac library).

The plug-in's documentation, options and registration are in :mod:`v2a_plugins.codecs.dac`,
which imports this module the first time a codec is built.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from v2a import AudioCodec, FeatureSequence
from v2a.downloads import download_to
from v2a.weights import PRETRAINED, WeightsError, is_random, load_checkpoint, local_file
from v2a_plugins.codecs.dac import ARCHITECTURE, PUBLISHED, DACConfig, dac_kwargs, release_file
from v2a_plugins.codecs.inference import remove_weight_norms, use_channels_last_convs
from v2a_plugins.codecs.precision import apply_codec_precisions

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


def _weights_file(config: DACConfig) -> Path:
    """The checkpoint file of ``config``: a local file, or the published release (downloaded
    once, with a progress bar and atomically, to where the dac library keeps it)."""
    if config.weights.strip().lower() == PRETRAINED:
        url, path = release_file(config)
        if not path.is_file():
            download_to(url, path, what=f"the published DAC {config.model} weights")
        return path
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
        self.precisions = apply_codec_precisions(self, name="dac", ignored=("chunk_seconds",))

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
